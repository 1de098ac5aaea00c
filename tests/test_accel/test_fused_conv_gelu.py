# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_wavemix.models.accel import (FusedConvGELU, fusable_dtypes,
                                        fuse_conv_gelu)
from mmseg_wavemix.models.accel import fused_conv_gelu as fused_module
from mmseg_wavemix.models.backbones import WaveMixBlock
from mmseg_wavemix.utils.analysis import count_flops

ONEDNN_OP = 'mkldnn::_convolution_pointwise'


def ran_onednn_op(fn):
    with torch.profiler.profile() as prof:
        out = fn()
    return out, any(e.name == ONEDNN_OP for e in prof.events())


@pytest.mark.parametrize('conv_kwargs', [
    dict(kernel_size=1),
    dict(kernel_size=3, padding=1, stride=2),
    dict(kernel_size=3, padding=2, dilation=2, groups=2, bias=False),
])
@pytest.mark.parametrize('channels_last', [False, True])
def test_equals_conv_then_gelu(conv_kwargs, channels_last):
    conv = nn.Conv2d(4, 6, **conv_kwargs)
    x = torch.randn(2, 4, 9, 11)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fused = FusedConvGELU(conv)
    with torch.no_grad():
        expected = F.gelu(conv(x))
        out, fused_op = ran_onednn_op(lambda: fused(x))
    assert fused_op == torch.backends.mkldnn.is_available()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cpu_has_bf16', [False, True])
def test_bf16_autocast_fused_only_where_the_cpu_can(cpu_has_bf16,
                                                    monkeypatch):
    """On a CPU without bf16 convolutions (AVX2 only) oneDNN's fused op
    raises: the dtypes are chosen when fusing, and bf16 then runs the plain
    layers (PyTorch's conv2d has its own fallback there)."""
    if cpu_has_bf16 and not fused_module.cpu_has_bf16_convolution():
        pytest.skip('this CPU has no bf16 convolutions in oneDNN')
    monkeypatch.setattr(fused_module, 'cpu_has_bf16_convolution',
                        lambda: cpu_has_bf16)
    dtypes = fusable_dtypes()
    assert (torch.bfloat16 in dtypes) == cpu_has_bf16
    assert torch.float32 in dtypes
    conv = nn.Conv2d(8, 16, 1)
    x = torch.randn(1, 8, 16, 16)
    fused = FusedConvGELU(conv, dtypes)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        expected = F.gelu(conv(x))
        out, fused_op = ran_onednn_op(lambda: fused(x))
    assert fused_op == cpu_has_bf16
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2,
                               atol=2e-2)


def test_with_gradients_runs_the_two_layers():
    conv = nn.Conv2d(4, 6, 1)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    out, fused_op = ran_onednn_op(lambda: FusedConvGELU(conv)(x))
    assert not fused_op
    grad, = torch.autograd.grad(out.sum(), x)
    expected, = torch.autograd.grad(F.gelu(conv(x)).sum(), x)
    torch.testing.assert_close(grad, expected)


def test_fuse_conv_gelu_in_a_block_and_flops_unchanged():
    block = WaveMixBlock(16, level=2).eval()
    x = torch.randn(1, 16, 8, 12)
    with torch.no_grad():
        expected = block(x)
    flops = count_flops(block, x)
    assert fuse_conv_gelu(block) is block
    assert all(
        isinstance(mlp.fc1, FusedConvGELU) and isinstance(
            mlp.act, nn.Identity) for mlp in block.mlps)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    # tracing (the FLOP counter) sees the two layers
    assert count_flops(block, x) == flops


def test_no_fused_op_no_fusion(monkeypatch):
    monkeypatch.setattr(fused_module, 'fusable_dtypes', frozenset)
    block = fuse_conv_gelu(WaveMixBlock(16, level=1).eval())
    assert type(block.mlps[0].fc1) is nn.Conv2d


def test_leaves_other_activations_alone():
    block = WaveMixBlock(16, level=1, act_cfg=dict(type='ReLU'))
    fuse_conv_gelu(block)
    assert isinstance(block.mlps[0].fc1, nn.Conv2d)
    assert isinstance(block.mlps[0].act, nn.ReLU)


def test_rejects_other_layers():
    for layer in (nn.ConvTranspose2d(2, 2, 2), nn.Conv2d(2, 2, 3,
                                                         padding='same')):
        with pytest.raises(TypeError, match='FusedConvGELU needs'):
            FusedConvGELU(layer)
