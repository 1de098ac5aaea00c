# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""1x1 convolutions as GEMMs (the CUDA step of prepare_for_inference and
prepare_for_training): the convolution's numbers on any device."""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_wavemix.engine import FastTrainingHook
from mmseg_wavemix.models.accel import (PointwiseGEMM, pointwise_convs_as_gemm,
                                        pointwise_gemm, prepare_for_training,
                                        timing)
from mmseg_wavemix.models.accel.pointwise_gemm import (
    inference_params, matmul_add, pointwise_linear_backward)

from ..conftest import logged_messages
from ..test_engine.test_fast_inference_hook import demo_model


def test_equals_the_convolution_with_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 7, 1)
    gemm = PointwiseGEMM.from_conv(copy.deepcopy(conv))
    x = torch.randn(2, 12, 5, 6).contiguous(memory_format=torch.channels_last)
    results = []
    for layer in (conv, gemm):
        xg = x.clone().requires_grad_()
        out = layer(xg)
        out.square().sum().backward()
        results.append((out, xg.grad, layer.weight.grad, layer.bias.grad))
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_other_layouts_and_traces_run_the_convolution():
    conv = nn.Conv2d(4, 3, 1)
    gemm = PointwiseGEMM.from_conv(conv)
    x = torch.randn(1, 4, 3, 5)  # NCHW: not a row-major matrix
    torch.testing.assert_close(gemm(x), conv(x))
    graph = torch.jit.trace(
        gemm, x.contiguous(memory_format=torch.channels_last)).graph
    assert 'aten::_convolution' in str(graph)
    assert 'aten::linear' not in str(graph)


@pytest.mark.parametrize('conv', [
    nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, stride=2),
    nn.Conv2d(4, 4, 1, groups=2), nn.Conv2d(4, 4, 1, padding=1)
])
def test_only_pointwise_convolutions_are_replaced(conv):
    with pytest.raises(TypeError, match='1x1 nn.Conv2d'):
        PointwiseGEMM.from_conv(conv)
    model = nn.Sequential(conv, nn.Conv2d(4, 2, 1))
    pointwise_convs_as_gemm(model)
    assert type(model[0]) is nn.Conv2d and type(model[1]) is PointwiseGEMM


def test_a_model_keeps_its_parameters_and_state_dict():
    model = demo_model(8, 3).train()
    params = list(model.parameters())
    keys = list(model.state_dict())
    pointwise_convs_as_gemm(model)
    gemms = [m for m in model.modules() if isinstance(m, PointwiseGEMM)]
    pointwise_convs_as_gemm(model)  # nothing left to replace
    assert gemms and gemms == [
        m for m in model.modules() if isinstance(m, PointwiseGEMM)]
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert list(model.state_dict()) == keys
    model.to(memory_format=torch.channels_last)
    inputs = torch.randn(2, 3, 64, 128)
    plain = demo_model(8, 3).train()
    plain.load_state_dict(model.state_dict())
    for m in (model, plain):
        m(inputs, mode='tensor').square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_training_preparation_is_for_cuda_only():
    model = demo_model(8, 3).train()
    FastTrainingHook().before_train(SimpleNamespace(model=model))
    assert prepare_for_training(model) is model
    assert not any(isinstance(m, PointwiseGEMM) for m in model.modules())
    assert model.backbone.stem[0].weight.is_contiguous()


def test_fixed_weights_are_cast_once_while_unchanged():
    """Under autocast in inference a prepared model's GEMM weights are cast
    once (prepare_for_inference sets ``fixed_weights``), and again only
    when changed in place (a checkpoint loaded into them) or replaced."""
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 7, 1)
    gemm = PointwiseGEMM.from_conv(copy.deepcopy(conv))
    x = torch.randn(1, 12, 5, 6).contiguous(memory_format=torch.channels_last)

    def autocast():
        return torch.autocast('cpu', dtype=torch.bfloat16)

    with autocast():
        # without fixed_weights, or with gradients: autocast casts
        assert inference_params(gemm, x)[0] is gemm.weight
        gemm.fixed_weights = True
        assert inference_params(gemm, x)[0] is gemm.weight
    with torch.no_grad():
        with autocast():
            weight, bias = inference_params(gemm, x)
            assert weight.dtype == bias.dtype == torch.bfloat16
            assert inference_params(gemm, x)[0] is weight  # cast once
            torch.testing.assert_close(gemm(x), conv(x), rtol=0, atol=0)
        conv.weight.mul_(2)
        gemm.load_state_dict(conv.state_dict())
        with autocast():
            assert inference_params(gemm, x)[0] is not weight
            torch.testing.assert_close(gemm(x), conv(x), rtol=0, atol=0)


def fp16(*size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*size, generator=generator).half()


def kernels_faster(kernel_calls, faster=True):
    """A stand-in for :func:`timing.time_ms` by which calls of the Triton
    kernels are the faster (or, with ``faster=False``, the slower)."""

    def time_ms(fn, device):
        calls = len(kernel_calls)
        fn()
        return 1. if (len(kernel_calls) > calls) == faster else 2.

    return time_ms


@pytest.mark.parametrize('faster', ['addmm', 'triton'])
def test_matmul_add_takes_the_faster_way_once_per_size(
        kernel_calls, monkeypatch, faster):
    """In float16 and bfloat16 where the Triton kernels serve (here in
    Triton's interpreter), ``a @ w + c`` is timed both ways at the first
    call of a size (rows rounded up to a power of two, as the kernel's
    tiles are tuned), and the faster serves it; float32 is addmm's."""
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_MATMUL_ADD', {})
    monkeypatch.setattr(timing, 'time_ms',
                        kernels_faster(kernel_calls, faster == 'triton'))
    a, w, c = fp16(40, 8, seed=0), fp16(8, 24, seed=1), fp16(40, 24, seed=2)
    expected = torch.addmm(c.double(), a.double(), w.double())
    with logged_messages() as logged:
        first = matmul_add(a, w, c)
    # the timing, then the choice with each way's median
    assert logged == [
        'a @ w + c (40x8 @ 8x24): timing addmm, triton (the first call of '
        'this size compiles and tunes the kernels)',
        f'a @ w + c (40x8 @ 8x24): {faster} serves ' + ', '.join(
            f'{name} {1. if name == faster else 2.:.3f} ms'
            for name in ('addmm', 'triton'))
    ]
    # untimed, timed, then the chosen way for the result
    assert kernel_calls == ['matmul_add'] * (1 + timing.ROUNDS +
                                             (faster == 'triton'))
    for rows in (40, 33):  # both 64 rows for the tiles
        kernel_calls.clear()
        out = matmul_add(a[:rows], w, c[:rows])
        assert kernel_calls == (['matmul_add'] if faster == 'triton' else [])
        torch.testing.assert_close(out.double(), expected[:rows], rtol=2e-3,
                                   atol=4e-3)
    torch.testing.assert_close(first, matmul_add(a, w, c), rtol=0, atol=0)
    assert list(pointwise_gemm._FASTEST_MATMUL_ADD.values()) == [faster]
    kernel_calls.clear()
    matmul_add(torch.cat((a, a)), w, torch.cat((c, c)))  # 80 rows: timed
    assert len(pointwise_gemm._FASTEST_MATMUL_ADD) == 2
    kernel_calls.clear()
    out = matmul_add(a.float(), w.float(), c.float())
    assert kernel_calls == [] and len(pointwise_gemm._FASTEST_MATMUL_ADD) == 2
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_the_input_gradient_adds_the_other_in_the_product(
        kernel_calls, monkeypatch):
    """``grad_x_plus`` (in a WaveMix block, the residual's gradient) is
    added to the input's gradient in :func:`matmul_add`, not in a pass of
    its own; the weight's and bias's gradients are unchanged by it."""
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_MATMUL_ADD', {})
    monkeypatch.setattr(timing, 'time_ms', kernels_faster(kernel_calls))
    channels_last = torch.channels_last
    x = fp16(2, 12, 3, 5, seed=0).contiguous(memory_format=channels_last)
    weight = fp16(6, 12, 1, 1, seed=1)
    grad_out = fp16(2, 6, 3, 5, seed=2).contiguous(memory_format=channels_last)
    plus = fp16(2, 12, 3, 5, seed=3).contiguous(memory_format=channels_last)
    grads = pointwise_linear_backward(grad_out, x, weight, (True, True, True),
                                      plus)
    assert 'matmul_add' in kernel_calls
    expected = torch.nn.grad.conv2d_input(x.shape, weight.double(),
                                          grad_out.double()) + plus.double()
    assert grads[0].is_contiguous(memory_format=channels_last)
    torch.testing.assert_close(grads[0].double(), expected, rtol=2e-3,
                               atol=4e-3)
    alone = pointwise_linear_backward(grad_out, x, weight, (True, True, True))
    for grad, grad_alone in zip(grads[1:], alone[1:]):
        torch.testing.assert_close(grad, grad_alone, rtol=0, atol=0)


def channels_last_fp16(*size, seed=0):
    return fp16(*size, seed=seed).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('faster', ['layers', 'triton'])
def test_linear_gelu_takes_the_faster_way_once_per_size(
        kernel_calls, monkeypatch, faster):
    """A level MLP's fc1 and GELU in training, where the Triton kernels
    serve (here in Triton's interpreter): the concatenation, the GEMM and
    the GELU, or Triton's kernel without the concatenation, timed at the
    first call of a size (with the pre-activation stored or not: two
    problems), the faster serving it; the same numbers either way."""
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_LINEAR_GELU', {})
    monkeypatch.setattr(timing, 'time_ms',
                        kernels_faster(kernel_calls, faster == 'triton'))
    a = channels_last_fp16(2, 24, 5, 7)
    b = channels_last_fp16(2, 12, 5, 7, seed=1)
    weight, bias = fp16(40, 36, 1, 1, seed=2) / 4, fp16(40, seed=3)
    inputs = torch.cat((a, b), 1).double()
    pre = F.conv2d(inputs, weight.double(), bias.double())
    with logged_messages() as logged:
        first = pointwise_gemm.pointwise_linear_gelu(a, b, weight, bias)
    assert logged[-1].startswith(
        f'gelu(conv1x1) of 24 + 12 channels to 40 (70 pixels): {faster} '
        'serves')
    assert kernel_calls == ['linear_gelu'] * (1 + timing.ROUNDS +
                                              (faster == 'triton'))
    for pre_activation in (False, True):
        kernel_calls.clear()
        out = pointwise_gemm.pointwise_linear_gelu(a, b, weight, bias,
                                                   pre_activation)
        # the concatenation only where the layers' way made it
        assert (out.inputs is None) == (faster == 'triton')
        assert out.out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out.out.double(), F.gelu(pre), rtol=2e-3,
                                   atol=4e-3)
        if pre_activation:  # another problem: timed
            assert kernel_calls == ['linear_gelu'] * (1 + timing.ROUNDS +
                                                      (faster == 'triton'))
            torch.testing.assert_close(out.pre_activation.double(), pre,
                                       rtol=2e-3, atol=4e-3)
        else:
            assert kernel_calls == (['linear_gelu']
                                    if faster == 'triton' else [])
            torch.testing.assert_close(out.out, first.out, rtol=0, atol=0)
    assert list(pointwise_gemm._FASTEST_LINEAR_GELU.values()) == [faster] * 2
    # float32, NCHW: the layers' way untimed, or nothing (not channels_last)
    kernel_calls.clear()
    out = pointwise_gemm.pointwise_linear_gelu(a.float(), b.float(),
                                               weight.float(), bias.float())
    assert kernel_calls == [] and out.inputs is not None
    assert pointwise_gemm.pointwise_linear_gelu(
        a.contiguous(), b, weight, bias) is None
    assert len(pointwise_gemm._FASTEST_LINEAR_GELU) == 2


def test_weight_grad_from_the_parts_of_the_input():
    a = channels_last_fp16(2, 24, 5, 7).float()
    b = channels_last_fp16(2, 12, 5, 7, seed=1).float()
    grad = channels_last_fp16(2, 40, 5, 7, seed=2).float()
    expected = torch.ops.aten.convolution_backward(
        grad, torch.cat((a, b), 1), torch.empty(40, 36, 1, 1), None, [1, 1],
        [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1]
    torch.testing.assert_close(
        pointwise_gemm.pointwise_weight_grad(grad, (a, b)), expected)
    assert pointwise_gemm.pointwise_weight_grad(grad.contiguous(),
                                                (a, b)) is None


@pytest.mark.parametrize('faster', ['pytorch', 'triton'])
def test_bias_grad_takes_the_faster_way_once_per_size(monkeypatch, faster):
    """A GEMM's bias gradient (the column sums of its output's gradient, in
    float32) where the Triton kernels serve (here in Triton's interpreter):
    PyTorch's sum and the one-pass kernel timed at the first call of a size
    (rows rounded up to a power of two), the faster serving it; other
    layouts and devices take PyTorch's sum untimed."""
    pytest.importorskip(
        'triton', reason='Triton is not installed (requirements/tests.txt)')
    from mmseg_wavemix.ops import gelu_triton, triton_support

    from ..test_ops.triton_interpreter import interpreted
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_BIAS_GRAD', {})
    rows = fp16(300, 40, seed=3)
    expected = rows.double().sum(0)
    with interpreted(gelu_triton) as module:
        kernel_calls = []
        kernel = module.bias_grad
        monkeypatch.setattr(
            module, 'bias_grad',
            lambda r: kernel_calls.append(r.shape) or kernel(r))
        monkeypatch.setattr(timing, 'time_ms',
                            kernels_faster(kernel_calls, faster == 'triton'))
        assert pointwise_gemm.bias_grad(rows).dtype == torch.float32
        assert not kernel_calls  # a CPU tensor: PyTorch's, untimed
        monkeypatch.setattr(triton_support, 'serves', lambda x: True)
        with logged_messages() as logged:
            first = pointwise_gemm.bias_grad(rows)
        assert logged[-1] == (
            f'bias gradient of 300x40 rows: {faster} serves ' + ', '.join(
                f'{name} {1. if name == faster else 2.:.3f} ms'
                for name in ('pytorch', 'triton')))
        for m in (300, 257):  # both 512 rows for the choice
            kernel_calls.clear()
            out = pointwise_gemm.bias_grad(rows[:m])
            assert kernel_calls == ([(m, 40)] if faster == 'triton' else [])
            assert out.dtype == torch.float32 and out.shape == (40, )
            torch.testing.assert_close(out.double(), rows[:m].double().sum(0),
                                       rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(first.double(), expected, rtol=1e-6,
                                   atol=1e-4)
        assert list(pointwise_gemm._FASTEST_BIAS_GRAD.values()) == [faster]
        kernel_calls.clear()
        pointwise_gemm.bias_grad(rows.t().contiguous().t())  # column-major
        assert not kernel_calls
        assert len(pointwise_gemm._FASTEST_BIAS_GRAD) == 1


@pytest.mark.parametrize('conv_args', [(12, 7, 1), (3, 32, 3, 2, 1)])
def test_training_gemms_take_their_bias_gradient_from_bias_grad(
        kernel_calls, monkeypatch, conv_args):
    """Where the GPU kernels serve (16-bit, here on CPU with the kernels in
    Triton's interpreter), a 1x1 and an image stem's convolution as GEMMs in
    training sum their bias gradient by :func:`pointwise_gemm.bias_grad`
    (autograd's is PyTorch's slow sum): output and gradients as close to
    float64 as the convolution's under bf16 autocast."""
    from mmseg_wavemix.models.accel import Im2colGEMM

    from .test_conv_bias import grads_of
    summed = []
    monkeypatch.setattr(
        pointwise_gemm, 'bias_grad', lambda rows, f=pointwise_gemm.bias_grad:
        summed.append(tuple(rows.shape)) or f(rows))
    torch.manual_seed(0)
    conv = nn.Conv2d(*conv_args)
    gemm = (PointwiseGEMM if conv_args[2] == 1 else Im2colGEMM).from_conv(
        copy.deepcopy(conv))
    x = torch.randn(2, conv_args[0], 10, 14).contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn_like(conv(x), dtype=torch.float64)
    exact, _ = grads_of(copy.deepcopy(conv).double(), x, torch.float64,
                        weight)
    theirs, _ = grads_of(conv, x, torch.bfloat16, weight)
    ours, out = grads_of(gemm, x, torch.bfloat16, weight)
    assert summed == [(out.numel() // conv_args[1], conv_args[1])]
    assert gemm.bias.grad.dtype == torch.float32
    for name, a, b, c in zip(('out', 'x', 'weight', 'bias'), ours, theirs,
                             exact):
        error, layer_error = ((t - c).abs().max() for t in (a, b))
        assert error <= 2 * layer_error + 1e-6 * c.abs().max(), name
