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


def test_outside_fp16_and_bf16_it_is_the_transposed_convolution(
        kernel_calls):
    conv = upsampling(8)
    fused = FusedUpsample.from_conv(copy.deepcopy(conv), 'triton')
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():  # float32
        torch.testing.assert_close(fused(x), conv(x), rtol=0, atol=0)
    xg = x.requires_grad_()  # float32 with gradients
    fused(xg).sum().backward()
    assert xg.grad is not None and fused.weight.grad is not None
    with torch.no_grad():  # an output size
        out = fused.half()(x.half(), output_size=[11, 15])
    assert out.shape[-2:] == (11, 15)
    assert kernel_calls == []


@pytest.mark.parametrize('channels_last', [False, True])
def test_in_training_the_kernels_give_the_layers_gradients(
        kernel_calls, channels_last):
    """With gradients (the decode head in training) the kernels compute
    the output, bias inside, and the layer's gradients follow: as close to
    float64 as the layer's in fp16, parameters' gradients in float32."""
    conv = upsampling(8).train()
    fused = FusedUpsample.from_conv(copy.deepcopy(conv), 'triton').train()
    memory_format = torch.channels_last if channels_last else \
        torch.contiguous_format
    x = torch.randn(2, 16, 6, 10, dtype=torch.float64)
    grad = torch.randn(2, 8, 12, 20, dtype=torch.float64)
    results = {}
    for name, layer, dtype in (('float64', copy.deepcopy(conv).double(),
                                torch.float64),
                               ('layer', copy.deepcopy(conv).half(),
                                torch.float16),
                               ('fused', fused.half(), torch.float16)):
        xg = x.to(dtype).clone(memory_format=memory_format).requires_grad_()
        out = layer(xg)
        out.backward(grad.to(dtype))
        results[name] = [t.double() for t in (out, xg.grad, layer.weight.grad,
                                              layer.bias.grad)]
    assert kernel_calls == ['conv_transpose_k4s2']
    assert fused.weight.grad.dtype == fused.weight.dtype
    for i, what in enumerate(('output', 'input grad', 'weight grad',
                              'bias grad')):
        expected = results['float64'][i]
        layer_error = (results['layer'][i] - expected).abs().max()
        error = (results['fused'][i] - expected).abs().max()
        assert error <= 1.5 * layer_error + 1e-3, (what, error, layer_error)


def test_changed_weights_are_packed_again(kernel_calls):
    """An optimizer step changes the weights in place: the next call packs
    them again; unchanged, they are packed once."""
    fused = FusedUpsample.from_conv(upsampling(8), 'triton').half()
    x = torch.randn(1, 16, 5, 7).half()
    with torch.no_grad():
        first = fused(x)
        packed = fused._weights(torch.float16)[0]['triton']
        assert fused._weights(torch.float16)[0]['triton'] is packed
        fused.weight.mul_(2)
        fused.bias.mul_(2)
        torch.testing.assert_close(fused(x), 2 * first, rtol=2e-3,
                                   atol=2e-3)
        assert fused._weights(torch.float16)[0]['triton'] is not packed


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


def test_in_training_the_level_mlps_upsamplings_are_left_alone():
    """Outside inference the level MLPs are not fused: a BatchNorm follows
    their upsampling (the memory-efficient ones leave its bias out); the
    head's are fused."""
    model = demo_model(8, 5).train()
    fuse_upsamples(model)
    assert [type(u.conv) for u in model.decode_head.upsamples] == \
        [FusedUpsample] * 2
    assert not any(
        isinstance(m, FusedUpsample) for m in model.backbone.modules())


def test_the_memory_efficient_head_trains_with_fused_upsamplings(
        kernel_calls):
    """The recipe's head under fp16 autocast (memory-efficient: it keeps
    its input and computes its first upsampling again in backward) with
    that upsampling fused: the kernels serve both, the gradients are the
    layers' up to fp16 rounding."""
    model = demo_model(8, 5).train()
    head = model.decode_head
    assert head.memory_efficient and head.fold_classifier
    fused = fuse_upsamples(copy.deepcopy(head), 'triton')
    x = torch.randn(2, 16, 8, 12).contiguous(
        memory_format=torch.channels_last)
    grads = []
    for layer in (head, fused):
        xg = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.float16):
            logits = layer([xg])
        logits.float().square().mean().backward()
        grads.append([xg.grad] + [p.grad for p in layer.parameters()])
    assert kernel_calls == ['conv_transpose_k4s2'] * 2  # forward, again
    for plain, ours in zip(*grads):
        torch.testing.assert_close(ours, plain, rtol=2e-2, atol=2e-3)


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
