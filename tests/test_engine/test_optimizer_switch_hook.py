# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os.path as osp

import pytest
import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading
from mmseg_wavemix.engine import OptimizerSwitchHook

from .toy_runner import build_toy_runner, recorder


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
    """Eight iterations: AdamW for 0-4, SGD for the final 3 (5-7)."""
    work_dir = tmp_path_factory.mktemp('full')
    runner = build_toy_runner(work_dir)
    runner.train()
    return runner, work_dir


def test_switches_for_the_final_iterations(full_run):
    runner, _ = full_run
    types = recorder(runner).types
    assert [types[i] for i in range(8)] == ['AdamW'] * 5 + ['SGD'] * 3
    optimizer = runner.optim_wrapper.optimizer
    assert optimizer.param_groups[0]['lr'] == 0.05
    assert optimizer.param_groups[0]['momentum'] == 0.9


@pytest.mark.parametrize('checkpoint_iter, expected_type',
                         [(4, 'AdamW'), (6, 'SGD')],
                         ids=['before_switch', 'after_switch'])
def test_resume_on_both_sides_of_the_switch(full_run, tmp_path,
                                            checkpoint_iter, expected_type):
    full_runner, full_dir = full_run
    checkpoint_file = osp.join(full_dir, f'iter_{checkpoint_iter}.pth')
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(checkpoint_file)
    assert checkpoint['meta']['optimizer_switched'] == (
        expected_type == 'SGD')

    resumed = build_toy_runner(tmp_path, resume_from=checkpoint_file)
    with mmengine_checkpoint_loading():
        resumed.train()
    start_iter, start_type, start_state = recorder(resumed).first_state
    assert start_iter == checkpoint_iter
    assert start_type == expected_type
    saved_state = checkpoint['optimizer']['state']
    assert saved_state.keys() == start_state['state'].keys()
    for key, state in saved_state.items():
        for name, value in state.items():
            torch.testing.assert_close(start_state['state'][key][name], value)
    # the resumed run ends exactly where the uninterrupted one did
    assert [recorder(resumed).types[i] for i in range(checkpoint_iter, 8)] \
        == [recorder(full_runner).types[i] for i in range(checkpoint_iter, 8)]
    for (name, p), (_, q) in zip(resumed.model.named_parameters(),
                                 full_runner.model.named_parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_auto_scale_lr_scales_the_new_optimizer_too(tmp_path):
    """mmengine scales the first optimizer's learning rates to the run's
    total batch; the optimizer switched to gets the same factor (3 images
    where the rates are for 6: a half)."""
    runner = build_toy_runner(
        tmp_path, auto_scale_lr=dict(enable=True, base_batch_size=6))
    runner.train()
    lrs = recorder(runner).lrs
    assert lrs[0] == pytest.approx(0.01 / 2)  # AdamW's, by mmengine
    assert lrs[5] == pytest.approx(0.05 / 2)  # SGD's, by the hook


def test_schedule_shorter_than_final_iters_switches_at_start(tmp_path):
    runner = build_toy_runner(tmp_path, max_iters=2, final_iters=5)
    runner.train()
    assert set(recorder(runner).types.values()) == {'SGD'}


@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'exactly one'),
    (dict(final_iters=1, final_epochs=1), 'exactly one'),
    (dict(final_iters=-1), '>= 0'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OptimizerSwitchHook(optimizer=dict(type='SGD', lr=0.1), **kwargs)
    with pytest.raises(ValueError, match='optimizer'):
        OptimizerSwitchHook(optimizer='SGD', final_iters=1)


def test_final_epochs(tmp_path):
    """Epoch-based training: 4 epochs of 4 iterations, SGD for the last."""
    runner = build_toy_runner(tmp_path, final_iters=None, final_epochs=1,
                              by_epoch=True, max_epochs=4)
    runner.train()
    types = recorder(runner).types
    assert [types[i] for i in range(16)] == ['AdamW'] * 12 + ['SGD'] * 4


def test_param_schedulers_follow_the_new_optimizer(tmp_path):
    runner = build_toy_runner(
        tmp_path,
        param_scheduler=dict(
            type='PolyLR', power=1., eta_min=0., by_epoch=False, end=10))
    runner.train()
    lrs = recorder(runner).lrs
    assert lrs[4] < lrs[0] == 0.01  # AdamW decays
    assert lrs[5] == pytest.approx(0.05)  # SGD starts at its own lr
    assert 0 < lrs[7] < lrs[6] < lrs[5]  # and keeps decaying


def test_an_optimizer_that_cannot_build_fails_before_training(tmp_path):
    """The optimizer to switch to is built once before the first iteration:
    a config PyTorch rejects (here fused and foreach at once; an argument
    an older PyTorch lacks, say) fails then, naming it, not at the switch
    after most of the training."""
    runner = build_toy_runner(tmp_path)
    hook, = [h for h in runner.hooks if isinstance(h, OptimizerSwitchHook)]
    hook.optimizer_cfg = dict(type='SGD', lr=0.05, momentum=0.9, fused=True,
                              foreach=True)
    with pytest.raises(ValueError, match=r"switch to, .*'fused': True.*"
                       r'cannot be built for this model: RuntimeError'):
        runner.train()
    assert recorder(runner).types == {}
    assert not list(tmp_path.glob('iter_*.pth'))
