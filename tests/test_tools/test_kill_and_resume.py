# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""No lost training: SIGKILL tools/train.py, then --resume continues from
exactly the saved state, before and after the AdamW -> SGD switch, with the
images and flips the run would have had next, to the weights of a run that
was not killed."""
import pytest
import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading

from .demo_data import (MAIN_CONFIG, data_root_options, make_cityscapes,
                        recorded_batches, run_tool, sampler_order)

MAX_ITERS = 12
# The main config with a tiny model (with dropout: random draws in
# training), a checkpoint and a validation (for the best-mIoU record) every 2
# iterations, SGD for the final 6, hooks that record the state each run
# starts from and each iteration's images, and one that SIGKILLs the first
# run right after the checkpoint of iteration {kill_after}.
CONFIG = f'''_base_ = [{MAIN_CONFIG!r}]
custom_imports = dict(
    imports=['mmseg_wavemix', 'tests.test_tools.start_state_hook'],
    allow_failed_imports=False)
model = dict(
    backbone=dict(embed_dims=16, depth=1, level=2, dropout=0.1,
                  memory_efficient=False),
    decode_head=dict(in_channels=16, channels=4))
train_dataloader = dict(batch_size=1)
# each validation's data loader draws a seed for its workers
val_dataloader = dict(persistent_workers=False)
train_cfg = dict(max_iters={MAX_ITERS}, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=-1))
custom_hooks = [
    dict(type='OptimizerSwitchHook',
         optimizer=dict(type='SGD', lr=1e-3, momentum=0.9), final_iters=6),
    dict(type='NonFiniteLossHook'),
    dict(type='SaveStartStateHook'),
    dict(type='RecordBatchesHook'),
    dict(type='KillAfterCheckpointHook', kill_after={{kill_after}})
]
randomness = dict(seed=0)
'''


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    return make_cityscapes(
        tmp_path_factory.mktemp('cityscapes'), 3, 2, height=64, width=128)


@pytest.fixture(scope='module')
def not_killed(cityscapes, tmp_path_factory):
    """The work directory of the run without interruption."""
    tmp_path = tmp_path_factory.mktemp('not_killed')
    config = tmp_path / 'config.py'
    config.write_text(CONFIG.format(kill_after=0))  # never
    work_dir = tmp_path / 'work_dir'
    run_tool('train.py', str(config), '--work-dir', str(work_dir),
             '--cfg-options', *data_root_options(cityscapes))
    return work_dir


@pytest.mark.parametrize('kill_after, optimizer_type',
                         [(4, 'AdamW'), (8, 'SGD')],
                         ids=['before_switch', 'after_switch'])
def test_sigkill_then_resume(cityscapes, not_killed, tmp_path, kill_after,
                             optimizer_type):
    config = tmp_path / 'config.py'
    config.write_text(CONFIG.format(kill_after=kill_after))
    work_dir = tmp_path / 'work_dir'
    args = [str(config), '--work-dir', str(work_dir), '--cfg-options',
            *data_root_options(cityscapes)]
    killed = run_tool('train.py', *args, check=False)
    assert killed.returncode == -9  # SIGKILL
    assert not (work_dir / f'iter_{kill_after + 2}.pth').exists()

    resumed = run_tool('train.py', *args, '--resume')
    with mmengine_checkpoint_loading():
        saved = torch.load(work_dir / f'iter_{kill_after}.pth')
        start = torch.load(work_dir / f'start_state_{kill_after}.pth')

    assert start['iter'] == saved['meta']['iter'] == kill_after
    assert start['optimizer_type'] == optimizer_type
    assert saved['meta']['optimizer_switched'] == (optimizer_type == 'SGD')
    assert start['lr'] == saved['optimizer']['param_groups'][0]['lr']
    saved_best = saved['message_hub']['runtime_info']['best_score']
    assert start['best_score'] == saved_best is not None
    for key, value in saved['state_dict'].items():
        torch.testing.assert_close(start['state_dict'][key], value, msg=key)
    assert start['optimizer']['state'].keys() == \
        saved['optimizer']['state'].keys()
    for index, state in saved['optimizer']['state'].items():
        for name, value in state.items():
            torch.testing.assert_close(
                start['optimizer']['state'][index][name], value)
    # ... and runs to the end of its schedule
    with mmengine_checkpoint_loading():
        final = torch.load(work_dir / f'iter_{MAX_ITERS}.pth')
    assert final['meta']['iter'] == MAX_ITERS
    assert final['meta']['optimizer_switched']
    # The resumed run loaded nothing for the trained batches, and its
    # images are those the sampler (seed 0) gives the following iterations.
    assert f'skipped the {kill_after} indices of the trained batches' in \
        resumed.stdout + resumed.stderr
    batches = recorded_batches(work_dir)
    assert [batch['iter'] for batch in batches] == list(range(MAX_ITERS))
    assert [batch['images'] for batch in batches] == \
        [[image] for image in sampler_order(cityscapes, 0, MAX_ITERS)]
    # ... flipped as in the run that was not killed (the flips are random)
    assert batches == recorded_batches(not_killed)
    assert {flip for batch in batches for flip in batch['flips']} == \
        {True, False}
    # which it ends as, to the bit
    with mmengine_checkpoint_loading():
        expected = torch.load(not_killed / f'iter_{MAX_ITERS}.pth')
    assert final['state_dict'].keys() == expected['state_dict'].keys()
    for key, value in final['state_dict'].items():
        assert torch.equal(value, expected['state_dict'][key]), key
