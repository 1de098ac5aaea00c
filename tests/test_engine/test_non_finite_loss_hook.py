# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper

from mmseg_wavemix.engine import NonFiniteLossHook

from ..conftest import host_reads
from .toy_runner import ToyDataset, build_toy_runner


def weights_are_finite(runner):
    return all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_stops_before_the_step_of_a_non_finite_loss(tmp_path):
    # batch 3, no shuffling: sample 9 is in the 4th iteration
    runner = build_toy_runner(
        tmp_path,
        dataset=ToyDataset(nan_sample=9),
        checkpoint_interval=1,
        extra_hooks=[dict(type='NonFiniteLossHook')])
    with pytest.raises(RuntimeError,
                       match=r'non-finite loss nan at iteration 4'):
        runner.train()
    assert weights_are_finite(runner)  # never updated from the NaN loss
    assert (tmp_path / 'iter_3.pth').exists()
    assert not (tmp_path / 'iter_4.pth').exists()


def test_skip_drops_the_step_and_goes_on(tmp_path):
    hook = NonFiniteLossHook(action='skip')
    runner = build_toy_runner(
        tmp_path, dataset=ToyDataset(nan_sample=9), extra_hooks=[hook])
    runner.train()
    # 12 samples at batch 3: sample 9 is in iterations 4 and 8
    assert runner.iter == 8 and hook.skipped == 2
    assert weights_are_finite(runner)


def test_finite_losses_train_to_the_end(tmp_path):
    hook = NonFiniteLossHook()
    runner = build_toy_runner(tmp_path, extra_hooks=[hook])
    runner.train()
    assert runner.iter == 8 and hook.skipped == 0


def test_bad_action():
    with pytest.raises(ValueError, match='action'):
        NonFiniteLossHook(action='ignore')


@pytest.mark.parametrize('value', [1.0, float('nan')])
def test_reads_the_loss_after_launching_the_backward_pass(value):
    # read before it, the host would wait for the forward pass to end
    model = torch.nn.Linear(2, 1)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    backward = wrapper.backward

    def logged_backward(loss, **kwargs):
        events.append('backward')
        backward(loss, **kwargs)

    wrapper.backward = logged_backward
    runner = SimpleNamespace(optim_wrapper=wrapper, iter=0,
                             logger=MMLogger.get_current_instance())
    hook = NonFiniteLossHook(action='skip')
    hook.before_train(runner)
    before = [p.detach().clone() for p in model.parameters()]
    with host_reads() as events:
        wrapper.update_params(model(torch.ones(1, 2)).sum() * value)
    finite = value == 1.0
    # a NaN loss's value is read once more for the warning
    read = '_local_scalar_dense'
    assert events == ['backward', read] + ([] if finite else [read])
    assert hook.skipped == (0 if finite else 1)
    changed = [not torch.equal(a, b) for a, b in zip(before,
                                                     model.parameters())]
    assert all(changed) if finite else not any(changed)
    assert all(p.grad is None or not p.grad.any()
               for p in model.parameters())


def test_skip_under_accumulation_keeps_the_windows_other_gradients():
    # the window's first loss is finite, its second NaN: skipping the NaN
    # one leaves the first one's gradients, and the step comes a loss later
    model = torch.nn.Linear(2, 1)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                           accumulative_counts=2)
    runner = SimpleNamespace(optim_wrapper=wrapper, iter=0,
                             logger=MMLogger.get_current_instance())
    hook = NonFiniteLossHook(action='skip')
    hook.before_train(runner)
    before = [p.detach().clone() for p in model.parameters()]

    def loss(value):
        return model(torch.ones(1, 2)).sum() * value

    wrapper.update_params(loss(1.0))
    first = [p.grad.clone() for p in model.parameters()]
    with host_reads() as events:
        wrapper.update_params(loss(float('nan')))
    assert hook.skipped == 1
    assert events[0] == '_local_scalar_dense'  # read before any backward
    for p, grad in zip(model.parameters(), first):
        assert torch.equal(p.grad, grad)
        assert torch.isfinite(p.grad).all()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    wrapper.update_params(loss(1.0))  # the window's second finite loss
    for p, b, grad in zip(model.parameters(), before, first):
        # two losses of gradient `grad`, each scaled by 1/2, at lr 0.1
        torch.testing.assert_close(p.detach(), b - 0.1 * grad * 2)
