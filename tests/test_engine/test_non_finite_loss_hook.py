# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest

from .toy_runner import ToyDataset, build_toy_runner


def test_stops_at_the_first_non_finite_loss(tmp_path):
    # batch 3, no shuffling: sample 9 is in the 4th iteration
    runner = build_toy_runner(
        tmp_path,
        dataset=ToyDataset(nan_sample=9),
        checkpoint_interval=1,
        extra_hooks=[dict(type='NonFiniteLossHook')])
    with pytest.raises(RuntimeError,
                       match=r'non-finite loss at iteration 4: loss=nan'):
        runner.train()
    assert (tmp_path / 'iter_3.pth').exists()
    assert not (tmp_path / 'iter_4.pth').exists()  # NaN weights not saved


def test_finite_losses_train_to_the_end(tmp_path):
    runner = build_toy_runner(
        tmp_path, extra_hooks=[dict(type='NonFiniteLossHook')])
    runner.train()
    assert runner.iter == 8
