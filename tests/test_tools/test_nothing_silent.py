# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Wrong checkpoints, wrong labels and changed configs stop the tools with
one line before anything runs, instead of a partial load, a traceback or a
meaningless score; opting out is explicit."""
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmseg_wavemix.utils.cli import build_model

from .demo_data import (MAIN_CONFIG, data_root_options, make_cityscapes,
                        run_tool)
from .test_error_messages import one_error_line

TINY = {
    'model.backbone.embed_dims': 16,
    'model.backbone.depth': 1,
    'model.decode_head.in_channels': 16,
    'model.decode_head.channels': 4,
}
TINY_OPTIONS = [f'{k}={v}' for k, v in TINY.items()]
QUICK_TRAIN = [
    'train_dataloader.batch_size=1', 'train_cfg.max_iters=1',
    'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
    'custom_hooks.0.final_iters=0'
]


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    return make_cityscapes(
        tmp_path_factory.mktemp('cityscapes'), 1, 1, height=64, width=128)


@pytest.fixture
def data(cityscapes, tmp_path):
    """A copy of the data that a test may break."""
    return shutil.copytree(cityscapes, tmp_path / 'data')


def save_weights(path, **changes):
    """A checkpoint of the tiny model with ``changes`` to its config."""
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.merge_from_dict({**TINY, **changes})
    torch.save({'state_dict': build_model(cfg).state_dict()}, path)
    return path


def labels(root, split):
    return sorted((root / 'gtFine' / split).rglob('*_labelTrainIds.png'))


def run_test(root, checkpoint, *extra):
    return run_tool('test.py', MAIN_CONFIG, checkpoint, *extra,
                    '--cfg-options', *TINY_OPTIONS,
                    *data_root_options(root), check=False)


@pytest.mark.parametrize('changes,expected', [
    (dict(embed_dims=32), [
        'have another shape', 'backbone.stem.0.weight [16, 3, 3, 3] in the '
        'checkpoint, [8, 3, 3, 3] in the model', 'another config'
    ]),
    ({'model.decode_head.num_classes': 5},
     ['another number of classes (5 in decode_head', 'the config has 19']),
])
def test_checkpoint_of_another_model(cityscapes, tmp_path, changes,
                                     expected):
    changes = {(k if k.startswith('model.') else f'model.backbone.{k}'): v
               for k, v in changes.items()}
    if 'model.backbone.embed_dims' in changes:
        changes.update({'model.decode_head.in_channels': 32,
                        'model.decode_head.channels': 8})
    checkpoint = save_weights(tmp_path / 'other.pth', **changes)
    line = one_error_line(run_test(cityscapes, checkpoint))
    assert f'checkpoint {checkpoint} does not fit the model' in line
    for text in expected:
        assert text in line, line


def test_backbone_checkpoints(cityscapes, tmp_path):
    full = torch.load(save_weights(tmp_path / 'full.pth'))['state_dict']
    backbone = {k: v for k, v in full.items() if k.startswith('backbone.')}
    only = tmp_path / 'backbone.pth'
    torch.save({'state_dict': backbone}, only)
    line = one_error_line(run_test(cityscapes, only))
    assert 'tensors are missing (decode_head.' in line
    assert 'holds the backbone only' in line and '--strict-load false' in line

    bare = tmp_path / 'bare.pth'
    torch.save({k[len('backbone.'):]: v for k, v in backbone.items()}, bare)
    assert "lack the 'backbone.' prefix" in one_error_line(
        run_test(cityscapes, bare))

    # on purpose: loads what fits and says what did not
    partial = run_test(cityscapes, only, '--strict-load', 'false',
                       '--work-dir', tmp_path / 'work')
    assert partial.returncode == 0, partial.stderr[-3000:]
    log = partial.stdout + partial.stderr
    assert '--strict-load false: loading' in log and 'mIoU' in log


def test_init_checkpoints(cityscapes, tmp_path):
    """The checkpoint of a backbone's init_cfg (type='Pretrained') is
    checked as load_from's: mmengine would warn and train from random
    weights."""
    other = save_weights(tmp_path / 'other.pth', **{
        'model.backbone.level': 3})
    options = [*TINY_OPTIONS, *QUICK_TRAIN, *data_root_options(cityscapes),
               'model.backbone.init_cfg.type=Pretrained',
               f'model.backbone.init_cfg.checkpoint={other}',
               'model.backbone.init_cfg.prefix=backbone.']
    stopped = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                       '--cfg-options', *options, check=False)
    line = one_error_line(stopped)
    assert f"checkpoint {other} does not fit the backbone (its init_cfg's " \
        'checkpoint)' in line and 'Config:' not in stopped.stdout
    assert 'another model or size' in line and '--strict-load false' in line
    # on purpose: loads what fits and says what did not
    partial = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                       '--strict-load', 'false', '--cfg-options', *options)
    log = partial.stdout + partial.stderr
    assert "tensors of the backbone (its init_cfg's checkpoint) from " \
        f'{other}; not loaded: ' in log and 'mlps.3.' in log


def test_label_map_of_another_size(data, tmp_path):
    label = labels(data, 'val')[0]
    Image.open(label).resize((64, 32)).save(label)
    line = one_error_line(
        run_test(data, save_weights(tmp_path / 'w.pth')))
    assert f'label map {label} is 32x64 but its image' in line
    assert 'is 64x128' in line


def test_label_value_that_is_no_train_id(data, tmp_path):
    label = labels(data, 'train')[0]
    values = np.asarray(Image.open(label)).copy()
    values[:] = 30  # also where the training crop falls
    Image.fromarray(values).save(label)
    result = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                      '--cfg-options', *TINY_OPTIONS, *QUICK_TRAIN,
                      *data_root_options(data), check=False)
    line = one_error_line(result)
    assert f'train_dataloader: label map {label} holds the value 30' in line
    assert 'nor the ignore index 255' in line
    assert 'Config:' not in result.stdout  # stopped before the config dump
    # opting out reaches the loss's own check (in one line too)
    unchecked = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                         '--check-labels', 'off', '--cfg-options',
                         *TINY_OPTIONS, *QUICK_TRAIN,
                         *data_root_options(data), check=False)
    line = one_error_line(unchecked)
    assert line.startswith('error: ValueError: ') and '30' in line
    assert 'Config:' in unchecked.stdout


def test_heads_of_another_number_of_classes(cityscapes, tmp_path):
    """A head with fewer classes than the dataset stops the tools (it would
    fail at the first label beyond them); one with more (as the authors'
    20-class Cityscapes weights) trains with a warning: mmseg's IoUMetric
    counts its extra classes' predictions as wrong without a word."""
    train = [*TINY_OPTIONS, *QUICK_TRAIN, *data_root_options(cityscapes)]
    fewer = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                     '--cfg-options', *train,
                     'model.decode_head.num_classes=5', check=False)
    assert one_error_line(fewer) == (
        'error: model.decode_head.num_classes is 5, but train_dataloader '
        'holds CityscapesDataset of 19 classes; set --cfg-options '
        'model.decode_head.num_classes=19 (each head), or give the dataset '
        "the model's classes (metainfo=dict(classes=...))")
    assert 'Config:' not in fewer.stdout  # stopped before the config dump
    more = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                    '--cfg-options', *train,
                    'model.decode_head.num_classes=20')
    log = more.stdout + more.stderr
    for loader in ('train_dataloader', 'val_dataloader'):
        assert f'{loader}: model.decode_head.num_classes is 20, but ' \
            'CityscapesDataset has 19 classes: classes 19..19 get no ' \
            'labels' in log
    assert 'mIoU' in log


def test_weights_trained_on_other_classes(cityscapes, tmp_path):
    """A checkpoint saved by mmengine names the classes it was trained on;
    testing it on a dataset whose classes differ (another dataset, or the
    same classes in another order) would score class k's predictions as
    another class."""
    from mmseg.datasets import CityscapesDataset
    classes = list(CityscapesDataset.METAINFO['classes'])
    classes[1], classes[2] = classes[2], classes[1]
    checkpoint = tmp_path / 'other_order.pth'
    torch.save(
        dict(torch.load(save_weights(tmp_path / 'w.pth')),
             meta=dict(dataset_meta=dict(classes=tuple(classes)))),
        checkpoint)
    line = one_error_line(run_test(cityscapes, checkpoint))
    assert line == (
        'error: test_dataloader: the checkpoint was trained on 19 classes, '
        'CityscapesDataset has 19, and they differ at class 1: '
        "'building' in the checkpoint, 'sidewalk' in the dataset; test on "
        "the classes the model was trained on (the dataset's metainfo=dict("
        'classes=...)), or --check-labels off to score it as it is')
    scored = run_test(cityscapes, checkpoint, '--check-labels', 'off',
                      '--work-dir', tmp_path / 'work')
    assert scored.returncode == 0 and 'mIoU' in scored.stdout + scored.stderr


def test_grayscale_images_are_accepted_with_a_note(data, tmp_path):
    image = next((data / 'leftImg8bit' / 'val').rglob('*.png'))
    Image.open(image).convert('L').save(image)
    result = run_test(data, save_weights(tmp_path / 'w.pth'), '--work-dir',
                      tmp_path / 'work')
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f'note: {image} is L' in log and 'mIoU' in log


def test_train_tool_errors_are_one_line(cityscapes, data, tmp_path):
    missing = run_tool('train.py', tmp_path / 'nope.py', check=False)
    assert 'config file not found' in one_error_line(missing)
    image = next((data / 'leftImg8bit' / 'train').rglob('*.png'))
    image.write_bytes(b'not an image')
    unreadable = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                          '--cfg-options', *TINY_OPTIONS,
                          *data_root_options(data), check=False)
    assert f'cannot read image {image}' in one_error_line(unreadable)
    data = data_root_options(cityscapes)
    for option, text in [('model.backbone.levle=3', "'levle'"),
                         ('model.backbone.level=7', 'level must be')]:
        result = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                          '--cfg-options', *TINY_OPTIONS, option, *data,
                          check=False)
        line = one_error_line(result)
        assert 'cannot build the model' in line and text in line, line
        assert 'Config:' not in result.stdout
    # uint8 labels for a preprocessor that would pass them to the losses
    unpaired = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                        '--cfg-options', *TINY_OPTIONS,
                        'model.data_preprocessor.type=SegDataPreProcessor',
                        *data, check=False)
    line = one_error_line(unpaired)
    assert 'packs its label maps as uint8 (PackSegInputsUint8)' in line
    assert 'Config:' not in unpaired.stdout
    debug = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                     '--debug', '--cfg-options', *TINY_OPTIONS,
                     'model.backbone.level=7', *data, check=False)
    assert debug.returncode != 0 and 'Traceback' in debug.stderr


def test_resume(cityscapes, tmp_path):
    options = [*TINY_OPTIONS, *QUICK_TRAIN, *data_root_options(cityscapes)]
    work_dir = tmp_path / 'work'
    fresh = run_tool('train.py', MAIN_CONFIG, '--work-dir', work_dir,
                     '--resume', '--cfg-options', *options)
    log = fresh.stdout + fresh.stderr
    assert f'WARNING - --resume: no checkpoint in {work_dir}' in log
    assert (work_dir / 'iter_1.pth').exists()

    changed = run_tool('train.py', MAIN_CONFIG, '--work-dir', work_dir,
                       '--resume', '--cfg-options', *options,
                       'model.backbone.depth=2', check=False)
    line = one_error_line(changed)
    assert 'iter_1.pth does not fit the model of this config' in line
    assert 'backbone.layers.1.' in line
    assert 'the config changed since it was saved' in line

    # our loop moves the sampler; mmengine's would load the trained batches
    resumed = run_tool('train.py', MAIN_CONFIG, '--work-dir', work_dir,
                       '--resume', '--cfg-options', *options)
    log = resumed.stdout + resumed.stderr
    assert 'the train sampler skipped the 1 indices' in log
    assert "mmengine's IterBasedTrainLoop loads" not in log
    slow = run_tool('train.py', MAIN_CONFIG, '--work-dir', work_dir,
                    '--resume', '--cfg-options', *options,
                    'train_cfg.type=IterBasedTrainLoop')
    assert ("WARNING - --resume: mmengine's IterBasedTrainLoop loads every "
            'batch already trained on again') in slow.stdout + slow.stderr

    # the weights converter reads a training checkpoint and says what it is
    converted = run_tool('convert_wavemix_weights.py', work_dir / 'iter_1.pth',
                         tmp_path / 'out.pth', check=False)
    assert converted.returncode != 0
    assert 'is an mmengine training checkpoint of this package\'s models' \
        in converted.stderr and 'needs no conversion' in converted.stderr


def test_converter_names_what_a_file_is(tmp_path):
    ours = save_weights(tmp_path / 'ours.pth')
    result = run_tool('convert_wavemix_weights.py', ours,
                      tmp_path / 'out.pth', check=False)
    assert result.returncode != 0
    assert 'is a checkpoint of this package\'s models' in result.stderr
    assert 'needs no conversion' in result.stderr
