# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/deployment/pytorch2onnx.py: the demo model and a WaveMix pyramid +
UPerNet model export, onnxruntime agrees with PyTorch, dynamic sizes run,
and bad input ends in one line."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_wavemix.utils.cli import build_model

from ..conftest import REPO_ROOT
from .demo_data import run_tool
from .test_error_messages import one_error_line

ort = pytest.importorskip(
    'onnxruntime', reason='onnxruntime is not installed (pip install -e '
    '.[deploy])')

DEMO = osp.join(REPO_ROOT, 'configs', 'wavemix',
                'wavemix_16x2_l4_cityscapes-demo.py')
UPERNET = osp.join(
    REPO_ROOT, 'configs', 'wavemix_decoders',
    'upernet_wavemix-256x16-l4_4xb2-80k_cityscapes-512x1024.py')
SMALL_UPERNET = {
    'model.backbone.embed_dims': 16,
    'model.backbone.depth': 4,
    'model.backbone.out_indices': (0, 1, 2, 3),
    'model.decode_head.in_channels': [16, 16, 16, 16],
    'model.decode_head.channels': 16,
    'model.auxiliary_head.in_channels': 16,
    'model.auxiliary_head.channels': 16
}


def as_options(options):
    """``--cfg-options`` arguments of a dict."""
    return [f'{k}={v}'.replace(' ', '') for k, v in options.items()]


def seeded_model(cfg):
    """The model of ``cfg`` with the same random weights at every run: the
    argmax check meets near-tied logits of a random model, which rounding
    may flip (Wave-ViT once agreed on 99.8% of the pixels, needing 99.9%,
    with a largest difference of 4.5e-6)."""
    torch.manual_seed(0)
    return build_model(cfg)


def save_weights(config, path, options=None):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options or {})
    model = seeded_model(cfg).eval()
    torch.save({'state_dict': model.state_dict()}, path)
    return model


def export(*args, check=True):
    return run_tool('deployment/pytorch2onnx.py', *args, check=check)


def test_demo_model_dynamic_export(tmp_path):
    model = save_weights(DEMO, tmp_path / 'demo.pth')
    onnx_file = tmp_path / 'demo.onnx'
    result = export(DEMO, tmp_path / 'demo.pth', '--out', onnx_file,
                    '--shape', 128, 256, '--dynamic', '--verify')
    assert 'argmax agreement 100.000%' in result.stdout
    assert 'latency 128x256' in result.stdout
    session = ort.InferenceSession(
        str(onnx_file), providers=['CPUExecutionProvider'])
    for shape in [(2, 3, 64, 192), (1, 3, 256, 128)]:  # other sizes, batch
        images = torch.randn(shape)
        logits = session.run(None, {'images': images.numpy()})[0]
        with torch.no_grad():
            expected = model(images, mode='tensor')
        assert logits.shape == (shape[0], 19, *shape[2:])
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)


def test_pyramid_upernet_export_and_argmax(tmp_path):
    save_weights(UPERNET, tmp_path / 'upernet.pth', SMALL_UPERNET)
    result = export(UPERNET, tmp_path / 'upernet.pth', '--out',
                    tmp_path / 'upernet.onnx', '--shape', 64, 128,
                    '--verify', '--cfg-options', *as_options(SMALL_UPERNET))
    assert result.stdout.count('argmax agreement') == 2

    model = save_weights(DEMO, tmp_path / 'demo.pth')
    export(DEMO, tmp_path / 'demo.pth', '--out', tmp_path / 'classes.onnx',
           '--shape', 64, 128, '--argmax')
    session = ort.InferenceSession(
        str(tmp_path / 'classes.onnx'), providers=['CPUExecutionProvider'])
    images = torch.randn(1, 3, 64, 128)
    classes = session.run(None, {'images': images.numpy()})[0]
    with torch.no_grad():
        expected = model(images, mode='tensor').argmax(1)
    assert (classes == expected.numpy()).mean() >= 0.999


def test_bad_input_is_one_line(tmp_path):
    save_weights(DEMO, tmp_path / 'demo.pth')
    out = ['--out', tmp_path / 'x.onnx']
    other = tmp_path / 'other.pth'
    save_weights(DEMO, other, {'model.backbone.embed_dims': 32})
    assert 'does not fit the model' in one_error_line(
        export(DEMO, other, *out, check=False))
    assert 'multiples of 64' in one_error_line(
        export(DEMO, tmp_path / 'demo.pth', *out, '--shape', 100, 200,
               '--dynamic', check=False))
    assert 'opset 6 is not supported: use 17 to' in one_error_line(
        export(DEMO, tmp_path / 'demo.pth', *out, '--shape', 64, 64,
               '--opset', 6, check=False))
    # an environment without onnxruntime: a module that fails to import
    shadow = tmp_path / 'shadow'
    shadow.mkdir()
    (shadow / 'onnxruntime.py').write_text('raise ImportError("absent")\n')
    result = subprocess.run(
        [sys.executable,
         osp.join(REPO_ROOT, 'tools', 'deployment', 'pytorch2onnx.py'),
         DEMO, str(tmp_path / 'demo.pth'), '--out', str(tmp_path / 'y.onnx')],
        capture_output=True, text=True, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=f'{shadow}{os.pathsep}{REPO_ROOT}'))
    assert 'onnxruntime is not installed: pip install -e .[deploy]' in \
        one_error_line(result)


@pytest.mark.parametrize('config,arch', [
    ('wtconvnext/wtconvnext-tiny_upernet_4xb2-amp-80k_cityscapes-512x1024.py',
     dict(depths=[1] * 4, channels=[16] * 4, wt_levels=[2, 2, 1, 1])),
    ('wavevit/wavevit-s_upernet_4xb2-amp-80k_cityscapes-512x1024.py',
     dict(stem_hidden_dim=8, embed_dims=[16] * 4, num_heads=[1, 2, 2, 4],
          mlp_ratios=[2] * 4, depths=[1] * 4, sr_ratios=[4, 2, 1, 1])),
    ('svt/svt-s_upernet_8xb2-amp-160k_ade20k-512x512.py',
     dict(stem_hidden_dim=8, embed_dims=[16] * 4, num_heads=[1, 2, 2, 4],
          mlp_ratios=[2] * 4, depths=[1] * 4, sr_ratios=[4, 2, 1, 1])),
], ids=['wtconvnext', 'wavevit', 'svt'])
def test_other_wavelet_backbones_export(config, arch, tmp_path):
    small = {
        'model.decode_head.in_channels': [16] * 4,
        'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 16,
        'model.auxiliary_head.channels': 16
    }
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', config), format_python_code=False)
    cfg.merge_from_dict(small)
    cfg.model.backbone.arch = arch
    cfg.dump(str(tmp_path / 'small.py'))
    torch.save({'state_dict': seeded_model(cfg).state_dict()},
               tmp_path / 'small.pth')
    result = export(tmp_path / 'small.py', tmp_path / 'small.pth', '--out',
                    tmp_path / 'small.onnx', '--shape', 64, 128, '--verify')
    assert result.stdout.count('argmax agreement') == 2
