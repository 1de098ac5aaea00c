# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
from pytorch_wavelets import DWTForward

from mmseg_wavemix.models.backbones import WaveMixBlock


def authors_levels(block, x):
    """The authors' way: every level recomputed from the reduced input with
    a J-level transform, details reshaped to 3 * c + band."""
    y = block.reduction(x)
    levels = []
    for j in range(1, block.level + 1):
        ll, highs = DWTForward(J=j, wave='db1', mode='zero')(y)
        b, c, _, h, w = highs[-1].shape
        levels.append(torch.cat((ll, highs[-1].reshape(b, 3 * c, h, w)), 1))
    return levels


@pytest.mark.parametrize('level', [1, 2, 3, 4])
def test_cascade_equals_recomputed_levels(level):
    block = WaveMixBlock(embed_dims=16, level=level)
    x = torch.randn(2, 16, 32, 48)
    for ours, ref in zip(block.wavelet_levels(x), authors_levels(block, x)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('level', [1, 2, 3, 4])
def test_shape_channels_and_parameter_layout(level):
    block = WaveMixBlock(embed_dims=32, level=level, mlp_ratio=2,
                         ff_channels=24)
    x = torch.randn(1, 32, 16, 16)
    assert block(x).shape == x.shape
    assert len(block.mlps) == level
    assert block.reduction.out_channels == 8
    # finest level: D (+ D/2 from the coarser level) -> D; others -> D/2
    assert block.mlps[0].upsample.out_channels == 32
    assert block.mlps[0].fc1.in_channels == (32 if level == 1 else 48)
    for mlp in block.mlps[1:]:
        assert mlp.upsample.out_channels == 16
        assert mlp.fc1.out_channels == 64
        assert mlp.fc2.out_channels == 24


@pytest.mark.parametrize('level', [1, 2])
def test_residual(level):
    # a finest-level norm that outputs zeros leaves only the residual
    block = WaveMixBlock(embed_dims=16, level=level)
    block.mlps[0].norm.weight.data.zero_()
    block.mlps[0].norm.bias.data.zero_()
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(block(x), x)


def test_needs_divisible_size():
    with pytest.raises(ValueError, match='divisible by 8'):
        WaveMixBlock(embed_dims=16, level=3)(torch.randn(1, 16, 12, 16))


@pytest.mark.parametrize('kwargs, match', [
    (dict(level=0), 'level'), (dict(level=5), 'level'),
    (dict(embed_dims=18), 'embed_dims'), (dict(ff_channels=0), 'ff_channels'),
    (dict(dropout=1.0), 'dropout')
])
def test_bad_arguments(kwargs, match):
    args = dict(embed_dims=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        WaveMixBlock(**args)
