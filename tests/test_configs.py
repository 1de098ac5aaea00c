# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Every config under configs/ builds and runs one forward pass."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from .conftest import REPO_ROOT

CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT) for path in glob.glob(
        osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in path)

# Paper Table 6 and the authors' package (19 classes).
PARAMS = {
    'wavemix_256x16_l4': 63_164_563,
    'wavemix_256x16_l3': 49_514_643,
    'wavemix_256x16_l2': 35_864_723,
    'wavemix_256x16_l1': 22_214_803,
    'wavemix_128x8_l1': 2_900_819,
}


def test_configs_found():
    assert 'configs/wavemix/wavemix_256x16_l4_cityscapes.py' in CONFIGS
    assert len(CONFIGS) >= 11


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_runs_forward(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    # SyncBN needs a process group; mmengine reverts it the same way when
    # training without one.
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    model = MODELS.build(cfg.model).eval()
    name = osp.basename(config).split('_cityscapes')[0]
    if name in PARAMS:
        assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    inputs = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        logits = model(inputs, mode='tensor')
    num_classes = cfg.model.decode_head.num_classes
    assert logits.shape == (1, num_classes, 64, 128)
    assert torch.isfinite(logits).all()
    # the recipe's train pipeline does no crop or rescale beyond the config's
    types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandomCrop' not in types and 'PhotoMetricDistortion' not in types
