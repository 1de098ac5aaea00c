# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch

from mmseg_wavemix.engine import NonFiniteLossHook
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
