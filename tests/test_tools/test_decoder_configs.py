# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Each decoder config (MMSeg decoders on WaveMix pyramids, WTConvNeXt,
Wave-ViT and SVT) trains two iterations through tools/train.py on generated
Cityscapes-format data (with a shrunken model and small crops, so that it runs
in seconds on CPU); each Wave-ViT and SVT classification config likewise on
scikit-learn's digits."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from ..conftest import REPO_ROOT
from .demo_data import make_cityscapes, run_tool

TINY_DIMS = 16
CROP = (64, 128)
DECODER_CONFIGS = sorted(
    glob.glob(osp.join(REPO_ROOT, 'configs', 'wavemix_decoders', '*.py')) +
    glob.glob(osp.join(REPO_ROOT, 'configs', 'wtconvnext', '*.py')) +
    glob.glob(osp.join(REPO_ROOT, 'configs', 'wavevit', '*.py')) +
    glob.glob(osp.join(REPO_ROOT, 'configs', 'svt', '*.py')))
CLASSIFICATION_CONFIGS = sorted(
    glob.glob(osp.join(REPO_ROOT, 'configs', 'wavevit_cls', '*.py')) +
    glob.glob(osp.join(REPO_ROOT, 'configs', 'svt_cls', '*.py')))
# The configs written for the tools need not be formatted (yapf: 0.3-0.4 s
# each).
UNFORMATTED = dict(format_python_code=False)
TINY_WAVEVIT = dict(
    stem_hidden_dim=8, embed_dims=[TINY_DIMS] * 4, num_heads=[1, 2, 2, 4],
    mlp_ratios=[2] * 4, depths=[1] * 4, sr_ratios=[4, 2, 1, 1])


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    return make_cityscapes(
        tmp_path_factory.mktemp('cityscapes'), 2, 2, height=128, width=256)


def shrink_head(head):
    in_channels = head['in_channels']
    head['in_channels'] = [TINY_DIMS] * len(in_channels) if isinstance(
        in_channels, (list, tuple)) else TINY_DIMS
    head['channels'] = min(head['channels'], TINY_DIMS)
    head['num_classes'] = 19
    if 'c1_in_channels' in head:
        head.update(c1_in_channels=TINY_DIMS, c1_channels=8)


def shrunken_config(config, data_root, work_dir):
    cfg = Config.fromfile(config, **UNFORMATTED)
    if cfg.model.backbone.type == 'WTConvNeXt':
        cfg.model.backbone.arch = dict(
            depths=[1, 1, 1, 1], channels=[TINY_DIMS] * 4,
            wt_levels=[2, 2, 1, 1])
    elif cfg.model.backbone.type in ('WaveViT', 'ScatteringViT'):
        cfg.model.backbone.arch = TINY_WAVEVIT
    else:
        cfg.model.backbone.update(
            embed_dims=TINY_DIMS, depth=4, level=2, out_indices=(0, 1, 2, 3))
    if cfg.model.get('neck'):
        cfg.model.neck.update(
            in_channels=[TINY_DIMS] * 4, out_channels=TINY_DIMS)
    for name in ('decode_head', 'auxiliary_head'):
        if cfg.model.get(name):
            shrink_head(cfg.model[name])
    cfg.model.data_preprocessor.size = CROP
    # The generated data is Cityscapes (also for the ADE20K configs).
    dataset = dict(
        type='CityscapesDataset',
        data_root=str(data_root),
        data_prefix=dict(
            img_path='leftImg8bit/train', seg_map_path='gtFine/train'))
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset = dict(
        dataset,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='RandomResize', scale=(256, 128), ratio_range=(0.5, 2.),
                 keep_ratio=True),
            dict(type='RandomCrop', crop_size=CROP, cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PhotoMetricDistortion'),
            dict(type='PackSegInputs')
        ])
    cfg.val_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.val_dataloader.dataset = dict(
        dataset,
        data_prefix=dict(
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')
        ])
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    path = osp.join(work_dir, 'shrunken_' + osp.basename(config))
    cfg.dump(path)
    return path


@pytest.mark.parametrize('config', DECODER_CONFIGS, ids=osp.basename)
def test_decoder_config_trains_two_iterations(config, cityscapes, tmp_path):
    shrunken = shrunken_config(config, cityscapes, tmp_path)
    result = run_tool('train.py', shrunken, '--work-dir', tmp_path / 'work')
    log = result.stdout + result.stderr
    assert 'Iter(train) [2/2]' in log and 'mIoU' in log
    if '/wtconvnext/' in config:  # the recipe's stage-wise lr decay is on
        assert 'Build LearningRateDecayOptimizerConstructor  stage_wise' in log
    assert (tmp_path / 'work' / 'iter_2.pth').exists()


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits')
    run_tool('dataset_converters/sklearn_digits.py', root)
    return root


@pytest.mark.parametrize('config', CLASSIFICATION_CONFIGS, ids=osp.basename)
def test_classification_config_trains_two_iterations(config, digits,
                                                     tmp_path):
    """The recipe (optimizer, schedule, Mixup/CutMix, label smoothing) on a
    tiny Wave-ViT or SVT, 256 digits at 32x32 in batches of 128."""
    cfg = Config.fromfile(config, **UNFORMATTED)
    cfg.model.backbone.arch = TINY_WAVEVIT
    cfg.model.head.update(in_channels=TINY_DIMS, num_heads=4, num_classes=10)
    cfg.model.data_preprocessor = dict(num_classes=10)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(32, 32)),
        dict(type='PackInputs')
    ]
    for loader, split in (('train_dataloader', 'train'),
                          ('val_dataloader', 'val')):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        cfg[loader].dataset = dict(
            type='CustomDataset', data_root=str(digits), data_prefix=split,
            pipeline=pipeline, indices=256)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    path = tmp_path / osp.basename(config)
    cfg.dump(str(path))
    result = run_tool('train.py', path, '--work-dir', tmp_path / 'work')
    log = result.stdout + result.stderr
    assert 'Epoch(train) [1][2/2]' in log and 'accuracy/top1' in log
    assert (tmp_path / 'work' / 'epoch_1.pth').exists()
