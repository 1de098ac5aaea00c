# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule

from mmseg_wavemix.models.accel import fuse_conv_bn, fuse_norm_layers
from mmseg_wavemix.models.backbones import WaveMix


def randomize_norms(model):
    """Non-trivial running statistics and affine parameters."""
    torch.manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            if m.affine:
                nn.init.normal_(m.weight)
                nn.init.normal_(m.bias)
    return model


@pytest.mark.parametrize('conv', [
    nn.Conv2d(4, 6, 3, padding=1),
    nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False),
    nn.ConvTranspose2d(4, 6, 4, 2, 1),
    nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2, bias=False),
])
@pytest.mark.parametrize('affine', [True, False])
def test_fuse_conv_bn_equals_conv_then_norm(conv, affine):
    bn = randomize_norms(nn.BatchNorm2d(6, affine=affine)).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = bn(conv(x))
        fused = fuse_conv_bn(conv, bn)
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
    assert fused is not conv and fused.bias is not None


@pytest.mark.parametrize('stem_type', ['strided', 'patchify'])
def test_fused_wavemix_equals_eval_mode(stem_type):
    model = randomize_norms(
        WaveMix(embed_dims=16, depth=2, level=3, stem_type=stem_type)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)[0]
        fuse_norm_layers(model)
        torch.testing.assert_close(model(x)[0], expected, rtol=1e-5,
                                   atol=1e-5)
    norms = [
        name for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    # Only the patchify stem's norm stays: a GELU sits between it and the
    # conv before it.
    assert norms == (['stem.4'] if stem_type == 'patchify' else [])


def test_norm_before_conv_is_not_folded():
    module = randomize_norms(
        ConvModule(4, 4, 3, padding=1, norm_cfg=dict(type='BN'),
                   order=('norm', 'conv', 'act'))).eval()
    fuse_norm_layers(module)
    assert isinstance(module.norm, nn.BatchNorm2d)


def test_fuse_conv_bn_errors():
    with pytest.raises(TypeError, match='Conv2d'):
        fuse_conv_bn(nn.Linear(2, 2), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match='running statistics'):
        fuse_conv_bn(
            nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
