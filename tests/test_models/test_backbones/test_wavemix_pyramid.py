# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The WaveMix feature pyramid feeds MMSeg decode heads that expect one.

The documented table (configs/_base_/models/wavemix_pyramid.py): every level
has embed_dims channels; multi-level heads take in_channels=[D] * 4 and
in_index=[0, 1, 2, 3], single-level heads in_channels=D and the level.
"""
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_wavemix.models.backbones import WaveMix
from mmseg_wavemix.ops import haar_lowpass

D = 32
MULTI = dict(in_channels=[D] * 4, in_index=[0, 1, 2, 3])
SINGLE = dict(in_channels=D, in_index=3)

# Each head with its own required arguments; only in_channels / in_index
# come from the WaveMix table.
HEADS = [
    dict(type='UPerHead', channels=16, **MULTI),
    dict(type='FPNHead', channels=16, feature_strides=[4, 8, 16, 32], **MULTI),
    dict(type='SegformerHead', channels=16, **MULTI),
    dict(
        type='LightHamHead',
        channels=16,
        ham_channels=16,
        in_channels=[D] * 3,
        in_index=[1, 2, 3]),
    dict(type='FCNHead', channels=16, input_transform='resize_concat',
         in_channels=[D] * 4, in_index=[0, 1, 2, 3]),
    dict(type='PSPHead', channels=16, **SINGLE),
    dict(type='ASPPHead', channels=16, **SINGLE),
    dict(
        type='DepthwiseSeparableASPPHead',
        channels=16,
        c1_in_channels=D,
        c1_channels=8,
        **SINGLE),
    dict(type='DAHead', channels=16, pam_channels=8, **SINGLE),
    dict(type='NLHead', channels=16, **SINGLE),
    dict(type='ISAHead', channels=16, isa_channels=8, **SINGLE),
    dict(type='FCNHead', channels=16, in_channels=D, in_index=2),
]


@pytest.fixture(scope='module')
def pyramid_backbone():
    return WaveMix(
        embed_dims=D,
        depth=4,
        level=2,
        out_indices=(0, 1, 2, 3),
        out_downsamples=(0, 1, 2, 3))


def test_pyramid_strides_and_channels(pyramid_backbone):
    outs = pyramid_backbone(torch.randn(1, 3, 128, 192))
    assert [o.shape for o in outs] == [(1, D, 128 // s, 192 // s)
                                       for s in (4, 8, 16, 32)]
    d8 = WaveMix(embed_dims=D, depth=4, level=2, out_indices=(0, 1, 2, 3),
                 out_downsamples=(0, 1, 1, 1))
    outs = d8(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]


def test_pyramid_levels_are_haar_lowpass_of_block_outputs(pyramid_backbone):
    plain = WaveMix(embed_dims=D, depth=4, level=2, out_indices=(0, 1, 2, 3))
    plain.load_state_dict(pyramid_backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    pyramid_backbone.eval(), plain.eval()
    with torch.no_grad():
        outs, block_outs = pyramid_backbone(x), plain(x)
    torch.testing.assert_close(outs[0], block_outs[0])
    torch.testing.assert_close(outs[2],
                               haar_lowpass(haar_lowpass(block_outs[2])))


def test_pyramid_adds_no_parameters():
    plain = WaveMix(embed_dims=D, depth=4, level=2)
    pyramid = WaveMix(
        embed_dims=D, depth=4, level=2, out_indices=(0, 1, 2, 3),
        out_downsamples=(0, 1, 2, 3))
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in pyramid.parameters())
    assert len(plain(torch.randn(1, 3, 32, 32))) == 1


@pytest.mark.parametrize(
    'head_cfg', HEADS, ids=[f"{h['type']}-{h['in_index']}" for h in HEADS])
def test_mmseg_heads_accept_the_pyramid(pyramid_backbone, head_cfg):
    head = MODELS.build(
        dict(head_cfg, num_classes=5, norm_cfg=dict(type='BN')))
    feats = pyramid_backbone(torch.randn(2, 3, 128, 128))
    logits = head(list(feats))
    if isinstance(logits, tuple):  # DAHead: (pam_cam, pam, cam) logits
        logits = logits[0]
    assert logits.shape[:2] == (2, 5)
    assert 128 // logits.shape[-1] in (4, 8, 16, 32)
    assert torch.isfinite(logits).all()
    logits.mean().backward()
    assert pyramid_backbone.stem[0].weight.grad is not None


def test_bad_out_downsamples():
    with pytest.raises(ValueError, match='out_downsamples'):
        WaveMix(depth=4, out_indices=(1, 3), out_downsamples=(0, ))
    with pytest.raises(ValueError, match='out_downsamples'):
        WaveMix(depth=4, out_indices=(3, ), out_downsamples=(-1, ))
