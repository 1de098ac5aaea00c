# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The choice among equivalent kernels (models/accel/timing.py): the
fastest serves, and one that computes something else never does."""
from typing import NamedTuple, Optional

import pytest
import torch

from mmseg_wavemix.models.accel import timing


class Result(NamedTuple):
    inputs: Optional[torch.Tensor]
    out: torch.Tensor


def reference_out(dtype=torch.float16):
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(64, 32, generator=generator) * 4).to(dtype)


def choose(calls, reference='library', times=None):
    """``timing.fastest`` over ``calls``, each timed as ``times`` says (by
    name; default: the order of ``calls``, the last the fastest)."""
    times = times or {name: float(-i) for i, name in enumerate(calls)}
    timed = {id(call): name for name, call in calls.items()}
    patch = pytest.MonkeyPatch()
    patch.setattr(timing, 'time_ms',
                  lambda fn, device: times[timed[id(fn)]])
    try:
        return timing.fastest(calls, torch.device('cpu'), {}, 'key',
                              always='library', what='a product',
                              reference=reference)
    finally:
        patch.undo()


def test_a_kernel_that_computes_something_else_never_serves():
    """Faster, but wrong (a wrong index, say): left out with a warning that
    names it, how far off it is, and the reference; the reference serves."""
    out = reference_out()
    wrong = out.flip(0)
    calls = dict(library=lambda: out, kernel=lambda: wrong)
    with pytest.warns(UserWarning, match=r"a product: 'kernel' differs from "
                      r"'library' by .* of the largest value .*left out"):
        assert choose(calls) == 'library'


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_rounding_is_no_difference(dtype, recwarn):
    """Another order of summation, rounded to 16 bits: the faster serves."""
    out = reference_out(dtype)
    exact = out.double()
    noisy = (exact + exact.abs().max() * 2**-9 *
             torch.rand(out.shape, dtype=torch.float64)).to(dtype)
    calls = dict(library=lambda: out, kernel=lambda: noisy)
    assert choose(calls) == 'kernel'
    assert not recwarn.list


def test_not_finite_where_the_reference_is_finite():
    out = reference_out()
    bad = out.clone()
    bad[3, 4] = float('nan')
    calls = dict(library=lambda: out, kernel=lambda: bad)
    with pytest.warns(UserWarning, match="'kernel' differs from 'library' "
                      'by inf'):
        assert choose(calls) == 'library'


def test_tuples_compare_the_tensors_both_have():
    """Results as tuples (fused ways leave a tensor out: None) compare
    the tensors both give; one off in any of them is left out."""
    out = reference_out()
    calls = dict(library=lambda: Result(out, out),
                 kernel=lambda: Result(None, out.clone()))
    assert choose(calls) == 'kernel'
    calls['kernel'] = lambda: Result(None, 2 * out)
    with pytest.warns(UserWarning, match="'kernel' differs"):
        assert choose(calls) == 'library'


def test_without_a_reference_the_results_are_not_compared(recwarn):
    """Calls that return nothing (a timed forward and backward pass), or
    no reference given: the fastest serves."""
    out = reference_out()
    calls = dict(library=lambda: out, kernel=lambda: out.flip(0))
    assert choose(calls, reference=None) == 'kernel'
    calls = dict(library=lambda: None, kernel=lambda: None)
    assert choose(calls) == 'kernel'
    assert not recwarn.list


def test_difference():
    out = reference_out(torch.float32)
    assert timing.difference(out, out) == (0., out.abs().max().item())
    share, scale = timing.difference(out + 0.01 * out.abs().max(), out)
    assert share == pytest.approx(0.01, rel=1e-3)
    assert timing.difference(out[:3], out)[0] == float('inf')
    assert timing.difference(out, out.new_full(out.shape, float('inf'))) \
        is None  # a reference that is not finite says nothing
    assert timing.difference(None, None) is None


def test_candidates_run_without_autograd():
    """The timed calls record no graph (their results are thrown away; in a
    checkpointed region the saved tensors must be those of the call that
    serves), whatever the caller's mode."""
    modes = []

    def call():
        modes.append(torch.is_grad_enabled())
        return reference_out()

    with torch.enable_grad():
        choose(dict(library=call, kernel=call))
        assert torch.is_grad_enabled()
    assert modes and not any(modes)


def test_a_single_candidate_serves_untimed(monkeypatch):
    """One way (the others not applying on this GPU): it is neither run
    nor timed to be chosen, and the choice is kept."""
    ran = []
    monkeypatch.setattr(timing, 'time_ms', lambda fn, device: ran.append(fn))
    cache = {}
    calls = dict(library=lambda: ran.append('library'))
    assert timing.fastest(calls, torch.device('cpu'), cache, 'key',
                          always='library', what='a product') == 'library'
    assert not ran and cache == {'key': 'library'}
