# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os.path as osp

import pytest
from mmengine.config import Config

from mmseg_wavemix.utils.cli import resolve_config_path, use_cpu_distributed


def test_resolve_config_path():
    path = resolve_config_path('mmseg::_base_/datasets/cityscapes.py')
    assert osp.isfile(path)
    assert Config.fromfile(path).dataset_type == 'CityscapesDataset'
    assert resolve_config_path('configs/x.py') == 'configs/x.py'
    with pytest.raises(FileNotFoundError, match='not installed'):
        resolve_config_path('no_such_package::x.py')


def test_use_cpu_distributed():
    cfg = Config(
        dict(
            env_cfg=dict(dist_cfg=dict(backend='nccl')),
            model=dict(
                backbone=dict(norm_cfg=dict(type='SyncBN')),
                decode_head=[dict(norm_cfg=dict(type='SyncBN'))])))
    use_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.decode_head[0].norm_cfg.type == 'BN'
    assert cfg.model_wrapper_cfg.device_ids is None
