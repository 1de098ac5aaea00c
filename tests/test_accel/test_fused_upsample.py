# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The fused 2x upsamplings outside the level MLPs (the decode head's; a
step of prepare_for_inference on CUDA): their kernels run on CPU here in
Triton's interpreter; on a GPU in tests/test_cuda.py."""
import copy

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks.wrappers import ConvTranspose2d as MMCVConvTranspose2d

from mmseg_wavemix.models.accel import (FusedLevelMLP, FusedUpsample,
                                        fold_head_classifier, fuse_level_mlps,
                                        fuse_norm_layers, fuse_upsamples,
                                        fused_upsample, timing)

from ..test_engine.test_fast_inference_hook import demo_model
from .test_fused_level_mlp import UPSAMPLE_CALLS

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')


def upsampling(out_channels, in_channels=16):
    torch.manual_seed(0)
    return nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1).eval()


# 5 output channels: rows of 10 bytes, which the TMA cannot take ('triton')
@pytest.mark.parametrize('out_channels,channels_last,upsample_kernel,calls', [
    (8, True, 'triton', 'triton'), (8, True, 'triton_tma', 'triton_tma'),
    (8, False, 'cudnn', 'cudnn'), (5, True, 'triton_tma', 'triton')
])
def test_fused_upsample_is_as_close_to_float64_as_the_layer_in_fp16(
        kernel_calls, out_channels, channels_last, upsample_kernel, calls):
    conv = upsampling(out_channels)
    fused = FusedUpsample.from_conv(copy.deepcopy(conv), upsample_kernel)
    memory_format = torch.channels_last if channels_last else \
        torch.contiguous_format
    x = torch.randn(2, 16, 6, 10, dtype=torch.float64)
    x_half = x.half().contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = copy.deepcopy(conv).double()(x)
        layer = copy.deepcopy(conv).half()(x_half)
        out = fused.half()(x_half)
    assert kernel_calls == [UPSAMPLE_CALLS[calls]]
    assert out.dtype == torch.float16
    assert out.is_contiguous(memory_format=memory_format)
    layer_error = (layer.double() - expected).abs().max()
    error = (out.double() - expected).abs().max()
    assert error <= 1.5 * layer_error, (error, layer_error)


def test_outside_fp16_inference_it_is_the_transposed_convolution(
        kernel_calls):
    conv = upsampling(8)
    fused = FusedUpsample.from_conv(copy.deepcopy(conv), 'triton')
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():  # float32
        torch.testing.assert_close(fused(x), conv(x), rtol=0, atol=0)
    xg = x.half().requires_grad_()  # gradients
    fused.half()(xg).float().sum().backward()
    assert xg.grad is not None and fused.weight.grad is not None
    with torch.no_grad():  # an output size
        out = fused(x.half(), output_size=[11, 15])
    assert out.shape[-2:] == (11, 15)
    assert kernel_calls == []


def test_auto_times_once_per_size_as_the_tiles_are_tuned(
        kernel_calls, monkeypatch):
    """Layers of one input size and different outputs (the head's and a
    level MLP's, say) are timed apart; images whose pixels round up to the
    same power of two (a dataset of many sizes) are not."""
    monkeypatch.setattr(fused_upsample, '_FASTEST_UPSAMPLE', {})
    timed = []
    monkeypatch.setattr(timing, 'time_ms',
                        lambda fn, device: timed.append(fn()) or 1.)
    layers = {
        out_channels: FusedUpsample.from_conv(upsampling(out_channels),
                                              'auto').half()
        for out_channels in (8, 16)
    }
    with torch.no_grad():
        for out_channels, size in ((8, (4, 6)), (16, (4, 6)), (8, (5, 6)),
                                   (8, (4, 8)), (8, (8, 8))):
            x = torch.randn(1, 16, *size).half().contiguous(
                memory_format=torch.channels_last)
            layers[out_channels](x)
    # 24, 30 and 32 pixels: one size for each layer; 64 pixels another
    assert len(fused_upsample._FASTEST_UPSAMPLE) == 3
    assert len(timed) == 3 * 3 * timing.ROUNDS


def test_the_head_upsamplings_are_fused_and_not_the_level_mlps():
    model = fuse_level_mlps(fuse_norm_layers(demo_model(8, 5)))
    fold_head_classifier(model.decode_head)
    params = list(model.parameters())
    keys = list(model.state_dict())
    upsamples = model.decode_head.upsamples
    # mmcv's ConvTranspose2d (ConvModule's), the folded one torch's
    assert [type(u.conv) for u in upsamples] == [
        MMCVConvTranspose2d, nn.ConvTranspose2d
    ]
    fuse_upsamples(model)
    assert [type(u.conv) for u in upsamples] == [FusedUpsample] * 2
    mlps = [m for m in model.modules() if isinstance(m, FusedLevelMLP)]
    assert mlps and all(
        type(m.mlp.upsample) is nn.ConvTranspose2d for m in mlps)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert list(model.state_dict()) == keys
    fuse_upsamples(model)  # nothing left to replace
    assert [type(u.conv) for u in upsamples] == [FusedUpsample] * 2


@pytest.mark.parametrize('conv', [
    nn.ConvTranspose2d(4, 4, 4, 2, 1, bias=False),
    nn.ConvTranspose2d(4, 4, 2, 2),
    nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1),
    nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2)
])
def test_only_4x4_stride_2_upsamplings_with_a_bias_are_fused(conv):
    with pytest.raises(TypeError, match='kernel 4, stride 2, padding 1'):
        FusedUpsample.from_conv(conv)
    model = nn.Sequential(conv)
    fuse_upsamples(model)
    assert model[0] is conv
