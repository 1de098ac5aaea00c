# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convolutions whose bias is added by one Triton pass (a CUDA step of
prepare_for_inference and prepare_for_training; here the kernel in Triton's
interpreter): the convolution's numbers, the faster way timed once a size."""
import copy

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel import (BiasPassConv2d, conv_bias,
                                        conv_biases_in_one_pass, timing)

from ..conftest import logged_messages
from ..test_engine.test_fast_inference_hook import demo_model
from .test_pointwise_gemm import kernels_faster


def grads_of(layer, x, dtype, weight):
    """The output and the gradients of ``x``, the weight and the bias, in
    float64, of ``layer(x)`` under CPU autocast to ``dtype`` (none for
    float64), backward from ``(out * weight).sum()``."""
    xg = x.clone().to(torch.float64 if dtype == torch.float64 else x.dtype)
    xg.requires_grad_()
    with torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float64):
        out = layer(xg)
    (out.double() * weight).sum().backward()
    return [t.double() for t in (out, xg.grad, layer.weight.grad,
                                 layer.bias.grad)], out


@pytest.mark.parametrize('memory_format',
                         [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize('faster', ['pytorch', 'triton'])
def test_takes_the_faster_way_once_per_size_with_the_layers_numbers(
        kernel_calls, monkeypatch, memory_format, faster):
    """Under bf16 autocast (the 16-bit dtypes the kernel serves) both ways
    are timed at the first call of a size and the faster serves it: output
    and gradients as close to float64 as the convolution's (the output
    rounded twice, as cuDNN's on a GPU, where this CPU's convolution adds
    the bias before it rounds: within a unit of the last place more), the
    bias's gradient summed in float32 and given in the parameter's dtype."""
    monkeypatch.setattr(conv_bias, '_FASTEST_CONV_BIAS', {})
    monkeypatch.setattr(timing, 'time_ms',
                        kernels_faster(kernel_calls, faster == 'triton'))
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, 2, 1)
    layer = BiasPassConv2d.from_conv(copy.deepcopy(conv))
    x = torch.randn(2, 8, 10, 14).contiguous(memory_format=memory_format)
    weight = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    exact, _ = grads_of(copy.deepcopy(conv).double(), x, torch.float64,
                        weight)
    theirs, _ = grads_of(conv, x, torch.bfloat16, weight)
    with logged_messages() as logged:
        ours, out = grads_of(layer, x, torch.bfloat16, weight)
    assert logged[-1].startswith(
        f'convolution of 2x8x10x14 to 12 channels with its bias: {faster} '
        'serves')
    # each way once untimed, then in each round, then the chosen
    assert kernel_calls == ['add_bias_residual_'] * (1 + timing.ROUNDS +
                                                     (faster == 'triton'))
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=memory_format)
    assert layer.bias.grad.dtype == torch.float32
    for name, a, b, c in zip(('out', 'x', 'weight', 'bias'), ours, theirs,
                             exact):
        error, layer_error = ((t - c).abs().max() for t in (a, b))
        ulp = torch.finfo(torch.bfloat16).eps * c.abs().max()
        assert error <= 1.5 * layer_error + ulp, name
    kernel_calls.clear()
    with logged_messages() as logged:
        grads_of(layer, x, torch.bfloat16, weight)
    assert logged == []  # timed once
    assert kernel_calls == (['add_bias_residual_']
                            if faster == 'triton' else [])


def test_pytorch_serves_untimed_where_the_kernel_does_not(
        kernel_calls, monkeypatch):
    """float32 (the kernel is for 16-bit activations), no bias, several
    groups: the convolution itself, nothing timed."""
    monkeypatch.setattr(conv_bias, '_FASTEST_CONV_BIAS', {})
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    conv, grouped = nn.Conv2d(8, 4, 3), nn.Conv2d(8, 4, 3, groups=2)
    torch.testing.assert_close(
        BiasPassConv2d.from_conv(copy.deepcopy(conv))(x), conv(x), rtol=0,
        atol=0)
    for layer, bias in ((conv, None), (grouped, grouped.bias)):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = conv_bias.conv2d_bias_pass(layer, x, layer.weight, bias)
            expected = layer._conv_forward(x, layer.weight, bias)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert kernel_calls == [] and not conv_bias._FASTEST_CONV_BIAS


@pytest.mark.parametrize('conv', [
    nn.Conv2d(4, 4, 3, bias=False),
    nn.Conv2d(4, 4, 3, groups=2),
    nn.ConvTranspose2d(4, 4, 3)
])
def test_only_convolutions_of_one_group_with_a_bias_are_replaced(conv):
    with pytest.raises(TypeError, match='one group with a bias'):
        BiasPassConv2d.from_conv(conv)
    model = nn.Sequential(conv, nn.Conv2d(4, 2, 3, padding='same'))
    conv_biases_in_one_pass(model)
    assert type(model[0]) is type(conv)
    assert type(model[1]) is BiasPassConv2d
    assert model[1].padding == 'same'


def test_a_model_keeps_its_parameters_and_state_dict():
    model = demo_model(8, 3).train()
    params = list(model.parameters())
    keys = list(model.state_dict())
    conv_biases_in_one_pass(model)
    assert isinstance(model.backbone.stem[1], BiasPassConv2d)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert list(model.state_dict()) == keys


def test_traces_record_the_convolution_itself(kernel_calls, monkeypatch):
    """FLOP counters and ONNX export see a convolution with its bias, no
    Python function."""
    monkeypatch.setattr(conv_bias, '_FASTEST_CONV_BIAS', {})
    layer = BiasPassConv2d.from_conv(nn.Conv2d(8, 16, 3, 2, 1)).bfloat16()
    graph = str(torch.jit.trace(layer, torch.randn(
        1, 8, 8, 8, dtype=torch.bfloat16), check_trace=False).graph)
    assert 'aten::_convolution' in graph and 'PythonOp' not in graph
    assert kernel_calls == []


def test_a_checkpointed_stem_times_once_and_trains_as_the_layers(
        kernel_calls, monkeypatch):
    """WaveMix's stem under AMP is recomputed in backward
    (``torch.utils.checkpoint``): the first step's timing, inside the
    checkpointed forward, saves nothing for backward (the recomputation
    makes the tensors of the way that serves only), and the gradients are
    the plain stem's."""
    monkeypatch.setattr(conv_bias, '_FASTEST_CONV_BIAS', {})
    monkeypatch.setattr(timing, 'time_ms', kernels_faster(kernel_calls))
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1))
    stem = copy.deepcopy(plain)
    conv_biases_in_one_pass(stem)
    x = torch.randn(2, 3, 32, 48).contiguous(
        memory_format=torch.channels_last)
    for step in range(2):
        for model in (plain, stem):
            with torch.autocast('cpu', dtype=torch.bfloat16):
                out = torch.utils.checkpoint.checkpoint(
                    model, x, use_reentrant=False, preserve_rng_state=False)
            out.float().square().mean().backward()
        for (name, a), b in zip(plain.named_parameters(), stem.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=2e-2, atol=1e-3,
                                       msg=name)
    # both convolutions' sizes, timed once each (prepare_for_training would
    # make the first an Im2colGEMM)
    assert list(conv_bias._FASTEST_CONV_BIAS.values()) == ['triton'] * 2
