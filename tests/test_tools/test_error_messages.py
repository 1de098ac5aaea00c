# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Bad input ends in one readable line naming the problem and the fix."""
import os

import pytest
import torch

from .demo_data import (MAIN_CONFIG, data_root_options, make_cityscapes,
                        run_tool)

TINY = [
    'model.backbone.embed_dims=16', 'model.backbone.depth=1',
    'model.decode_head.in_channels=16', 'model.decode_head.channels=4'
]


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    return make_cityscapes(
        tmp_path_factory.mktemp('cityscapes'), 1, 1, height=64, width=128)


@pytest.fixture(scope='module')
def weights(tmp_path_factory, cityscapes):
    """A valid checkpoint of the tiny model."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.merge_from_dict(
        {k: int(v) for k, v in (o.split('=') for o in TINY)})
    cfg.model.backbone.norm_cfg = dict(type='BN')
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, path)
    return path


def one_error_line(result):
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines()
             if line.startswith('error: ')]
    assert len(lines) == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    return lines[0]


def test_test_tool_checkpoint_errors(tmp_path, cityscapes, weights):
    data = data_root_options(cityscapes)
    missing = run_tool('test.py', MAIN_CONFIG, tmp_path / 'none.pth',
                       '--cfg-options', *TINY, *data, check=False)
    assert 'checkpoint not found' in one_error_line(missing)

    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(weights.read_bytes()[:1000])
    line = one_error_line(
        run_tool('test.py', MAIN_CONFIG, truncated, '--cfg-options', *TINY,
                 *data, check=False))
    assert 'truncated, corrupt or not a PyTorch checkpoint' in line

    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    assert 'cannot read checkpoint' in one_error_line(
        run_tool('test.py', MAIN_CONFIG, text, '--cfg-options', *TINY, *data,
                 check=False))

    no_weights = tmp_path / 'empty.pth'
    torch.save({'meta': {}}, no_weights)
    assert 'holds no model weights' in one_error_line(
        run_tool('test.py', MAIN_CONFIG, no_weights, '--cfg-options', *TINY,
                 *data, check=False))

    # --debug shows the traceback
    debug = run_tool('test.py', MAIN_CONFIG, truncated, '--debug',
                     '--cfg-options', *TINY, *data, check=False)
    assert debug.returncode != 0 and 'Traceback' in debug.stderr


def test_data_errors(tmp_path, cityscapes, weights):
    missing_root = run_tool(
        'test.py', MAIN_CONFIG, weights, '--cfg-options', *TINY,
        *data_root_options(tmp_path / 'nowhere'), check=False)
    line = one_error_line(missing_root)
    assert 'data_root' in line and 'does not exist' in line
    assert 'test_dataloader.dataset.data_root' in line

    empty = tmp_path / 'empty'
    (empty / 'leftImg8bit' / 'val').mkdir(parents=True)
    assert 'no images ending in' in one_error_line(
        run_tool('test.py', MAIN_CONFIG, weights, '--cfg-options', *TINY,
                 *data_root_options(empty), check=False))

    label = next(path for path in cityscapes.rglob('*_labelTrainIds.png')
                 if '/val/' in str(path))
    os.rename(label, str(label) + '.bak')
    try:
        result = run_tool('train.py', MAIN_CONFIG, '--work-dir', tmp_path,
                          '--cfg-options', *TINY,
                          *data_root_options(cityscapes), check=False)
    finally:
        os.rename(str(label) + '.bak', label)
    line = one_error_line(result)
    assert 'val_dataloader: label map' in line and 'is missing' in line
    assert 'tools/dataset_converters/cityscapes.py' in line


# Each tool that reads a config, with the arguments it needs besides it.
CONFIG_TOOLS = {
    'train.py': [],
    'test.py': ['x.pth'],
    'benchmark.py': [],
    'analysis_tools/get_flops.py': [],
    'analysis_tools/profile_model.py': [],
    'analysis_tools/benchmark_level_mlp.py': [],
    'analysis_tools/benchmark_data.py': ['data_root'],
    'analysis_tools/benchmark_recipe.py': ['data_root'],
    'deployment/pytorch2onnx.py': ['x.pth', '--out', 'x.onnx'],
}
# ... of which these stop where the model does not build (train.py's and
# test.py's errors: test_nothing_silent.py; benchmark.py reports an entry
# that fails in its row and measures the others; the data and recipe tools
# build no model of their own)
MODEL_TOOLS = [
    'analysis_tools/get_flops.py', 'analysis_tools/profile_model.py',
    'analysis_tools/benchmark_level_mlp.py', 'deployment/pytorch2onnx.py'
]


@pytest.mark.parametrize('tool', CONFIG_TOOLS)
def test_every_tool_names_a_config_it_cannot_read(tool, tmp_path):
    """A missing config, one that does not parse and one whose model does
    not build: one line each, from every tool that takes a config."""
    if tool.startswith('deployment/'):
        pytest.importorskip(
            'onnxruntime', reason='the export tool first checks its '
            'dependencies: pip install -e .[deploy]')
    extra = CONFIG_TOOLS[tool]
    missing = run_tool(tool, tmp_path / 'nope.py', *extra, check=False)
    assert one_error_line(missing) == \
        f'error: config file not found: {tmp_path / "nope.py"}'
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')
    unreadable = run_tool(tool, broken, *extra, check=False)
    assert one_error_line(unreadable).startswith(
        f'error: cannot read the config {broken}: SyntaxError')
    if tool not in MODEL_TOOLS:
        return
    bad_model = tmp_path / 'bad_model.py'
    bad_model.write_text(f"_base_ = '{MAIN_CONFIG}'\n"
                         'model = dict(backbone=dict(level=9))\n')
    unbuildable = run_tool(tool, bad_model, *extra, check=False)
    assert 'level must be an integer from 1 to 4' in one_error_line(
        unbuildable)


def test_auto_scale_lr_needs_the_batch_the_rates_are_for(tmp_path):
    config = tmp_path / 'no_base_batch.py'
    config.write_text(f"_base_ = '{MAIN_CONFIG}'\nauto_scale_lr = None\n")
    result = run_tool('train.py', config, '--auto-scale-lr', check=False)
    assert one_error_line(result) == (
        'error: --auto-scale-lr: the config does not say the total batch its '
        'learning rates are for; add auto_scale_lr = dict(base_batch_size=N)')
