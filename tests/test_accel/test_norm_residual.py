# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A training BatchNorm and its residual (a WaveMix block's output): cuDNN's
way or the statistics and one Triton pass (here in Triton's interpreter),
the same numbers either way."""
import copy

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel import norm_residual, pointwise_gemm, timing
from mmseg_wavemix.models.accel.norm_residual import (
    batch_norm_residual, batch_norm_residual_backward)

from ..conftest import logged_messages
from .test_memory_efficient import prepared_block_and_input
from .test_pointwise_gemm import kernels_faster

TOLERANCES = {
    torch.float16: dict(rtol=2e-3, atol=4e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=3e-2)
}


def inputs(dtype, memory_format, shape=(2, 24, 6, 10)):
    generator = torch.Generator().manual_seed(0)
    z, residual, grad = (
        (torch.randn(shape, generator=generator, dtype=torch.float64) * 3 +
         1).to(dtype).contiguous(memory_format=memory_format)
        for _ in range(3))
    weight = torch.empty(shape[1]).uniform_(0.5, 2, generator=generator)
    weight *= torch.randn(shape[1], generator=generator).sign()
    bias = torch.randn(shape[1], generator=generator)
    return z, residual, grad, weight, bias


def expected_in_float64(z, residual, grad, weight, bias, momentum, eps):
    """nn.BatchNorm2d in training in float64 plus the residual: the output,
    the gradients of z, the weight and the bias, the running statistics."""
    norm = nn.BatchNorm2d(z.shape[1], eps=eps, momentum=momentum).double()
    norm.weight.data.copy_(weight)
    norm.bias.data.copy_(bias)
    zd = z.double().requires_grad_()
    out = norm(zd) + residual.double()
    grads = torch.autograd.grad(out, (zd, norm.weight, norm.bias),
                                grad.double())
    return out, grads, (norm.running_mean, norm.running_var)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('memory_format',
                         [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize('faster', ['cudnn', 'triton'])
def test_takes_the_faster_way_once_per_size_with_the_same_numbers(
        kernel_calls, monkeypatch, dtype, memory_format, faster):
    """Where the Triton kernels serve, both ways are timed (forward and
    backward) at the first call of a size and the faster serves it: the
    output (the Triton way's in place of the input), the gradients and the
    running statistics of nn.BatchNorm2d plus the residual, in float64 up to
    16-bit rounding."""
    monkeypatch.setattr(norm_residual, '_FASTEST_NORM_RESIDUAL', {})
    monkeypatch.setattr(timing, 'time_ms',
                        kernels_faster(kernel_calls, faster == 'triton'))
    z, residual, grad, weight, bias = inputs(dtype, memory_format)
    momentum, eps = 0.1, 1e-5
    out64, grads64, running64 = expected_in_float64(z, residual, grad, weight,
                                                    bias, momentum, eps)
    for step in range(2):
        running = torch.zeros(24), torch.ones(24)
        kernel_calls.clear()
        source = z.clone()
        with logged_messages() as logged:
            out, saved = batch_norm_residual(source, residual, weight, bias,
                                             *running, momentum, eps)
        if step == 0:
            assert logged[-1].startswith(
                'BatchNorm + residual in training (2x24x6x10 '
                f'{str(dtype)[6:]}): {faster} serves')
            # each way once untimed, then in each round
            assert kernel_calls == ['add_bias_residual_'] * (
                1 + timing.ROUNDS + (faster == 'triton'))
        else:  # timed once
            assert logged == []
            assert kernel_calls == (['add_bias_residual_']
                                    if faster == 'triton' else [])
        assert (out is source) == (faster == 'triton')
        # the BatchNorm's own backward either way (cuDNN's on a GPU)
        assert saved.reserve.numel() == 0
        assert out.dtype == dtype and out.is_contiguous(
            memory_format=memory_format)
        torch.testing.assert_close(out.double(), out64, **TOLERANCES[dtype])
        for ours, expected in zip(running, running64):
            torch.testing.assert_close(ours.double(), expected, rtol=1e-5,
                                       atol=1e-6)
        grads = batch_norm_residual_backward(grad, z, weight, *running, saved,
                                             eps, (True, True, True))
        for ours, expected in zip(grads, grads64):
            scale = expected.abs().max()
            assert (ours.double() - expected).abs().max() <= 2e-2 * scale
    assert list(norm_residual._FASTEST_NORM_RESIDUAL.values()) == [faster]


def test_cudnn_way_serves_untimed_where_the_kernel_does_not(
        kernel_calls, monkeypatch):
    """No residual (the coarser levels), float32 (the kernels are for 16-bit
    training), a residual of another layout: PyTorch's BatchNorm and an
    addition, nothing timed."""
    monkeypatch.setattr(norm_residual, '_FASTEST_NORM_RESIDUAL', {})
    z, residual, _, weight, bias = inputs(torch.bfloat16,
                                          torch.channels_last)
    cases = [(z, None), (z.float(), residual.float()),
             (z, residual.contiguous())]
    for source, res in cases:
        out, saved = batch_norm_residual(source, res, weight, bias,
                                         torch.zeros(24), torch.ones(24), 0.1,
                                         1e-5)
        assert out is not source
    assert kernel_calls == [] and not norm_residual._FASTEST_NORM_RESIDUAL


def test_block_trains_the_same_either_way(kernel_calls, monkeypatch):
    """A memory-efficient block prepared as for CUDA (GEMM 1x1 convolutions,
    channels_last) under bf16 autocast, every kernel in Triton's interpreter
    chosen faster or not: the same output, gradients and running
    statistics, each about as close to float64 as the other's."""
    block, x, weight = prepared_block_and_input(16)

    # the GEMMs' choices: the first run's (the layers') for both runs
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_LINEAR_GELU', {})
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_MATMUL_ADD', {})

    def train(kernels, dtype=torch.bfloat16):
        monkeypatch.setattr(norm_residual, '_FASTEST_NORM_RESIDUAL', {})
        monkeypatch.setattr(timing, 'time_ms',
                            kernels_faster(kernel_calls, kernels))
        model = copy.deepcopy(block).to(torch.float64 if dtype ==
                                        torch.float64 else torch.float32)
        xg = x.to(dtype).clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=dtype == torch.bfloat16):
            out = model(xg)
        (out.double() * weight).sum().backward()
        return [
            out, xg.grad, *(p.grad for p in model.parameters()),
            *model.buffers()
        ]

    layers, ours = train(False), train(True)
    assert 'add_bias_residual_' in kernel_calls
    assert list(norm_residual._FASTEST_NORM_RESIDUAL.values()) == ['triton']
    exact = train(False, torch.float64)
    names = ['out', 'x', *(n for n, _ in block.named_parameters()),
             *(n for n, _ in block.named_buffers())]
    for name, a, b, c in zip(names, ours, layers, exact):
        if name.endswith('upsample.bias') or c.dtype == torch.int64:
            continue  # BN follows: true grad 0; batches counted
        scale = c.abs().max()
        error, layers_error = ((t.double() - c).abs().max() for t in (a, b))
        # bf16 noise: either may round closer
        assert error <= 2 * layers_error + 1e-6 * scale, name
