# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/dist_train.sh with 2 processes on CPU (gloo, SyncBN -> BN),
resumed, and resumed again in one process."""
import os
import subprocess
import sys

import pytest
import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading

from ..conftest import REPO_ROOT
from .demo_data import (MAIN_CONFIG, data_root_options, make_cityscapes,
                        recorded_batches, sampler_order, tool_env)

MAX_ITERS = 3
RESUMED_ITERS = 5

OPTIONS = [
    'model.backbone.embed_dims=16', 'model.backbone.depth=1',
    'model.backbone.level=2', 'model.decode_head.in_channels=16',
    'model.decode_head.channels=4', 'train_dataloader.batch_size=1',
    f'train_cfg.max_iters={MAX_ITERS}', 'train_cfg.val_interval=3',
    'default_hooks.checkpoint.interval=3'
]
# The main config (no randomness.seed) plus hooks that save each rank's
# weights after training and record each rank's images at each iteration.
CONFIG_WITH_RANK_DUMP = f'''_base_ = [{MAIN_CONFIG!r}]
custom_imports = dict(
    imports=['mmseg_wavemix', 'tests.test_tools.rank_weights_hook',
             'tests.test_tools.start_state_hook'],
    allow_failed_imports=False)
custom_hooks = [
    dict(type='OptimizerSwitchHook',
         optimizer=dict(type='SGD', lr=1e-3, momentum=0.9), final_iters=1),
    dict(type='SaveRankWeightsHook'),
    dict(type='RecordBatchesHook')
]
'''


@pytest.mark.skipif(
    not torch.distributed.is_gloo_available(), reason='needs gloo')
def test_two_process_training_agrees(tmp_path):
    root = make_cityscapes(tmp_path / 'cityscapes', 5, 2, 64, 128)
    work_dir = tmp_path / 'work_dir'
    config = tmp_path / 'rank_dump.py'
    config.write_text(CONFIG_WITH_RANK_DUMP)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PORT='29533')

    def dist_train(*args, options=()):
        return subprocess.run(
            ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
             str(work_dir), *args, '--cfg-options', *OPTIONS,
             *data_root_options(root), *options],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            timeout=600)

    result = dist_train()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert 'SyncBN needs CUDA' in log
    assert "'backend': 'gloo'" in log or 'backend=gloo' in log or \
        "backend='gloo'" in log
    weights = [
        torch.load(work_dir / f'rank{rank}_weights.pth') for rank in (0, 1)
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        if 'running_' in key or 'num_batches' in key:
            continue  # BN statistics are per process without SyncBN
        torch.testing.assert_close(weights[0][key], weights[1][key], msg=key)
    # and the run trained: the weights moved from the checkpointed ones
    assert (work_dir / 'iter_3.pth').exists()

    # Resumed: each rank's batches continue the interrupted run's order
    # (its seed was drawn at random), without loading the trained ones.
    resumed = dist_train(
        '--resume', options=[f'train_cfg.max_iters={RESUMED_ITERS}'])
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-5000:]
    assert f'skipped the {2 * MAX_ITERS} indices of the trained batches' in log
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(work_dir / f'iter_{MAX_ITERS}.pth')
    seed = checkpoint['meta']['seed']
    order = sampler_order(root, seed, 2 * RESUMED_ITERS)
    for rank in (0, 1):
        batches = recorded_batches(work_dir, rank)
        assert [batch['iter'] for batch in batches] == \
            list(range(RESUMED_ITERS))
        assert [batch['images'] for batch in batches] == \
            [[image] for image in order[rank::2]]

    # Resumed in one process at batch 2: it continues the two processes'
    # order from where they stopped together.
    one = subprocess.run(
        [sys.executable, 'tools/train.py', str(config), '--work-dir',
         str(work_dir), '--resume', '--cfg-options', *OPTIONS,
         *data_root_options(root), 'train_dataloader.batch_size=2',
         f'train_cfg.max_iters={RESUMED_ITERS + 2}'],
        cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True,
        timeout=600)
    log = one.stdout + one.stderr
    assert one.returncode == 0, log[-5000:]
    assert f'skipped the {2 * RESUMED_ITERS} indices' in log
    order = sampler_order(root, seed, 2 * RESUMED_ITERS + 4)
    batches = recorded_batches(work_dir)[RESUMED_ITERS:]
    assert [batch['iter'] for batch in batches] == \
        [RESUMED_ITERS, RESUMED_ITERS + 1]
    assert [batch['images'] for batch in batches] == \
        [order[10:12], order[12:14]]
