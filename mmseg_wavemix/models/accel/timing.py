# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The fastest of several ways to compute the same thing, timed on the
device at the first call of each problem size, as ``cudnn.benchmark`` times
cuDNN's algorithms."""
import statistics
import time
import warnings
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor

# Timed calls of each candidate, interleaved, after one untimed call each.
ROUNDS = 3
# GPU cycles (about a millisecond) the queue is kept busy before each timed
# call: the host launches the call's kernels meanwhile, so the events time
# the GPU's work alone, as a CUDA graph replays it, not the launch overhead
QUEUED_CYCLES = 2_000_000
# The most a candidate's output may differ from the reference's, as a share of
# the reference's largest magnitude: 4 units of the last place at 1 (two ways
# of computing the same in 16 bits round a few times, by at most half a unit
# each); a kernel that computes something else (wrong on this GPU or Triton
# version) is off by far more.
AGREEMENT = {
    dtype: 4 * torch.finfo(dtype).eps
    for dtype in (torch.float16, torch.bfloat16)
}
AGREEMENT_OTHER_DTYPES = 1e-4


def layout(x: Tensor):
    """``x``'s memory format by name (``'contiguous'``, ``'channels_last'``),
    else its strides: part of a timed problem's key."""
    if x.is_contiguous():
        return 'contiguous'
    if x.is_contiguous(memory_format=torch.channels_last):
        return 'channels_last'
    return x.stride()


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of ``fn()``: GPU time by CUDA events, else wall time."""
    if device.type != 'cuda':
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    sleep = getattr(torch.cuda, '_sleep', None)  # private: it may go
    if sleep is not None:
        sleep(QUEUED_CYCLES)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _tensors(out: object) -> list:
    """The tensors of a call's result (a tensor, or a tuple of tensors and
    Nones), in order."""
    if isinstance(out, Tensor):
        return [out]
    return list(out) if isinstance(out, (tuple, list)) else []


def difference(out: object,
               reference: object) -> Optional[Tuple[float, float]]:
    """The largest difference between the tensors of two results that
    both have (as a share of the reference's largest magnitude), and that
    magnitude; None where nothing can be compared (no tensors, or a
    reference that is not finite). A share of inf: a shape differs, or
    ``out`` is not finite where the reference is."""
    worst = None
    for a, b in zip(_tensors(out), _tensors(reference)):
        if a is None or b is None or not torch.isfinite(b).all():
            continue
        if a.shape != b.shape or not torch.isfinite(a).all():
            return float('inf'), float('nan')
        if not a.numel():
            continue
        scale = b.abs().max().float().item()
        share = (a - b).abs().max().float().item() / max(scale, 1e-30)
        if worst is None or share > worst[0]:
            worst = share, scale
    return worst


def _agreeing(calls: Dict[str, Callable[[], object]], results: dict,
              reference: str, what: str) -> None:
    """Leave out of ``calls`` (with a warning) each candidate whose result
    differs from ``reference``'s by more than rounding
    (:data:`AGREEMENT`)."""
    dtype = next((t.dtype for t in _tensors(results[reference])
                  if t is not None), None)
    limit = AGREEMENT.get(dtype, AGREEMENT_OTHER_DTYPES)
    for name, out in results.items():
        if name == reference:
            continue
        found = difference(out, results[reference])
        if found is not None and found[0] > limit:
            warnings.warn(
                f'{what}: {name!r} differs from {reference!r} by '
                f'{found[0]:.2g} of the largest value ({found[1]:.3g}): it '
                'computes something else on this GPU or Triton version, and '
                'is left out; please report it')
            del calls[name]


def _timed(calls: Dict[str, Callable[[], object]], device: torch.device,
           always: str, what: str, reference: Optional[str]) -> dict:
    """Each call's times over the rounds, by name, after its untimed call
    (candidates that fail or disagree with ``reference`` left out of
    ``calls``, see :func:`fastest`)."""
    results = {}
    for name, call in list(calls.items()):
        try:
            out = call()
        except Exception as error:  # noqa: BLE001
            if name == always:
                raise
            warnings.warn(f'{what}: {name!r} failed, left out: '
                          f'{type(error).__name__}: {error}')
            del calls[name]
            continue
        if reference is not None:
            results[name] = out
    if reference in results:
        _agreeing(calls, results, reference, what)
    del results
    times = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            times[name].append(time_ms(call, device))
    return times


def fastest(calls: Dict[str, Callable[[], object]],
            device: torch.device,
            cache: Dict[Hashable, str],
            key: Hashable,
            always: str,
            what: str,
            reference: Optional[str] = None) -> str:
    """The name of the call in ``calls`` found fastest for the problem
    ``key``, kept in ``cache`` (shared by the layers of that size, as a
    tuner's cache is).

    At the first call of ``key`` (where there are two or more candidates;
    one serves untimed) each candidate runs once untimed (a Triton
    kernel is tuned at its first call), then :data:`ROUNDS` times, the
    candidates interleaved, and the one of the least median time wins; the
    timing and its result are logged (``logger='current'``). A
    candidate that raises is left out with a warning, but ``always`` (the
    one that always serves), whose error is raised. Given a ``reference``
    (the library's way), each other candidate's untimed result is compared
    with its result first, and one that differs by more than rounding
    (:data:`AGREEMENT`) is left out with a warning. Within a CUDA graph
    being recorded nothing can be timed: an untimed ``key`` takes
    ``always``. The candidates run without autograd: their results are
    thrown away, and in a region that ``torch.utils.checkpoint`` recomputes
    in backward the tensors autograd saves must be those of the call that
    serves (the recomputation, timed no more, makes only those).

    Args:
        calls (dict[str, Callable]): The candidates, by name, each
            computing the same result.
        device (torch.device): Where they run.
        cache (dict): The choices made so far, by ``key``.
        key (Hashable): The problem (device, dtype, sizes, layouts).
        always (str): The candidate that serves where nothing is timed.
        what (str): What they compute, for the log and the warnings.
        reference (str, optional): The candidate whose result the others
            must agree with; its calls return tensors (or tuples of them).
            Default: None (the results are not compared).

    Returns:
        str: The name of the fastest call.
    """
    if key in cache:
        return cache[key]
    if len(calls) == 1:  # nothing to choose from
        cache[key] = next(iter(calls))
        return cache[key]
    if device.type == 'cuda' and torch.cuda.is_current_stream_capturing():
        return always
    calls = dict(calls)
    print_log(f'{what}: timing {", ".join(calls)} (the first call of this '
              'size compiles and tunes the kernels)', logger='current')
    with torch.no_grad():
        times = _timed(calls, device, always, what, reference)
    medians = {name: statistics.median(t) for name, t in times.items()}
    cache[key] = min(medians, key=medians.get)
    print_log(f'{what}: {cache[key]} serves ' + ', '.join(
        f'{name} {ms:.3f} ms' for name, ms in medians.items()),
              logger='current')
    return cache[key]
