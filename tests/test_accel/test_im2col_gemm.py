# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convolutions of an image's few channels as one GEMM (a CUDA step of
prepare_for_inference and prepare_for_training): the convolution's numbers
on any device."""
import copy

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel import (Im2colGEMM, few_channel_convs_as_gemm,
                                        prepare_for_inference,
                                        prepare_for_training)
from mmseg_wavemix.models.accel.im2col_gemm import patch_matrix
from mmseg_wavemix.models.accel.pointwise_gemm import inference_params
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..test_engine.test_fast_inference_hook import DEMO, demo_model


# (in, out, kernel, stride, padding, bias): WaveMix's strided stem, a
# patchify stem, and odd kernels, strides and paddings
@pytest.mark.parametrize('memory_format',
                         [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize('conv_args', [
    (3, 32, 3, 2, 1, True), (3, 48, 4, 4, 0, True),
    (1, 16, (3, 5), (1, 2), (0, 2), False), (7, 64, 3, 1, 1, True)
])
def test_equals_the_convolution_with_gradients(conv_args, memory_format):
    """In both layouts of the input (the data preprocessor's NCHW batches,
    a prepared model's channels_last), a channels_last output."""
    *args, bias = conv_args
    torch.manual_seed(0)
    conv = nn.Conv2d(*args, bias=bias).double()
    gemm = Im2colGEMM.from_conv(copy.deepcopy(conv))
    x = torch.randn(2, args[0], 13, 18, dtype=torch.float64).contiguous(
        memory_format=memory_format)
    results = []
    for layer in (conv, gemm):
        xg = x.clone().requires_grad_()
        out = layer(xg)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(
        ).backward()
        results.append((out, xg.grad, layer.weight.grad) +
                       ((layer.bias.grad, ) if bias else ()))
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_under_autocast_it_rounds_as_the_convolution_does():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 32, 3, 2, 1)
    gemm = Im2colGEMM.from_conv(conv)
    x = torch.randn(1, 3, 32, 48).contiguous(
        memory_format=torch.channels_last)
    exact = copy.deepcopy(conv).double()(x.double())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ours, theirs = gemm(x), conv(x)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    ours_error = (ours.double() - exact).abs().max()
    assert ours_error <= 1.5 * (theirs.double() - exact).abs().max()


def test_fixed_weights_keep_the_patch_matrix_cast_once():
    """A prepared model's stem (``fixed_weights``) pads and casts its weight
    to the patch matrix once, not in every call (a kernel each in a CUDA
    graph's replay)."""
    torch.manual_seed(0)
    gemm = Im2colGEMM.from_conv(nn.Conv2d(3, 32, 3, 2, 1))
    x = torch.randn(1, 3, 16, 20).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        expected = gemm(x)
        gemm.fixed_weights = True
        matrix, _ = inference_params(gemm, x, patch_matrix)
        assert matrix.shape == (32, 32) and matrix.dtype == torch.bfloat16
        assert not matrix[:, 27:].any()  # 27 values a patch, 32 columns
        assert inference_params(gemm, x, patch_matrix)[0] is matrix
        torch.testing.assert_close(gemm(x), expected, rtol=0, atol=0)
    assert gemm._cast_params[1][0] is matrix  # the call above used it


def test_traces_run_the_convolution():
    conv = nn.Conv2d(3, 32, 3, 2, 1)
    gemm = Im2colGEMM.from_conv(conv)
    x = torch.randn(1, 3, 8, 10)
    graph = torch.jit.trace(gemm, x).graph
    assert 'aten::_convolution' in str(graph)
    assert 'aten::linear' not in str(graph)
    torch.testing.assert_close(gemm(x), conv(x))


@pytest.mark.parametrize('conv', [
    nn.Conv2d(8, 64, 3), nn.Conv2d(3, 16, 3),  # 27 values a patch > 16
    nn.Conv2d(4, 32, 3, groups=2), nn.Conv2d(3, 32, 3, dilation=2),
    nn.Conv2d(3, 32, 3, padding='same'),
    nn.Conv2d(3, 32, 3, padding=1, padding_mode='reflect')
])
def test_only_convolutions_of_few_channels_are_replaced(conv):
    with pytest.raises(TypeError, match='at most 7 input channels'):
        Im2colGEMM.from_conv(conv)
    model = nn.Sequential(conv, nn.Conv2d(3, 32, 3, 2, 1))
    few_channel_convs_as_gemm(model)
    assert type(model[0]) is nn.Conv2d and type(model[1]) is Im2colGEMM


def test_a_model_keeps_its_parameters_and_state_dict():
    _, model = build_model_from_config(DEMO, {
        'model.backbone.embed_dims': 64,
        'model.decode_head.in_channels': 64
    })
    params = list(model.parameters())
    keys = list(model.state_dict())
    few_channel_convs_as_gemm(model)
    stem = model.backbone.stem
    assert type(stem[0]) is Im2colGEMM  # the image's 3 channels to 32
    assert type(stem[1]) is nn.Conv2d  # 32 channels
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert list(model.state_dict()) == keys


def test_prepare_for_inference_takes_it_on_cuda_only():
    model = prepare_for_inference(demo_model(8, 3))
    assert not any(isinstance(m, Im2colGEMM) for m in model.modules())
    model = prepare_for_training(demo_model(8, 3))
    assert not any(isinstance(m, Im2colGEMM) for m in model.modules())
