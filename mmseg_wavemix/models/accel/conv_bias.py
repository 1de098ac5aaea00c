# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convolutions whose bias is added by one Triton pass, for GPUs.

PyTorch runs a convolution with bias on cuDNN as the convolution without it
and then ``out.add_(bias.view(1, -1, 1, 1))``; for a channels_last output
that broadcast addition runs an unvectorised kernel. In the recipe's
training step on an H100 (session 26's profile) the stem's second
convolution's bias took 0.75 ms a call over its 5x256x256x512 output, two
calls a step (the stem is recomputed in backward), about three times a pass
at the card's bandwidth; and the convolution's backward sums the bias
gradient by PyTorch's slow float32 sum. Here the bias is added in place by
:func:`~mmseg_wavemix.ops.level_mlp_triton.add_bias_residual_` (one pass,
16-byte accesses) and its gradient is
:func:`~mmseg_wavemix.models.accel.pointwise_gemm.channel_grad`'s. Which way
serves a size is timed at its first call (:func:`~.timing.fastest`).
"""
from functools import partial
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmseg_wavemix.ops import level_mlp_triton

from .fused_upsample import compute_dtype
from .pointwise_gemm import channel_grad, inference_params, replace_layers
from .timing import fastest, layout

# The way found fastest for a convolution with bias (device, dtype, input
# shape and layout, weight shape, stride, padding, dilation): 'pytorch' or
# 'triton'.
_FASTEST_CONV_BIAS: Dict[tuple, str] = {}


class _AddBiasFunction(torch.autograd.Function):
    """``out + bias`` per channel in place of ``out`` (dense, NCHW or
    channels_last) in one Triton pass; the bias's gradient by
    :func:`~.pointwise_gemm.channel_grad`."""

    @staticmethod
    def forward(ctx, out: Tensor, bias: Tensor) -> Tensor:
        ctx.mark_dirty(out)
        ctx.bias_dtype = bias.dtype
        return level_mlp_triton.add_bias_residual_(out, bias.float())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        grad_bias = channel_grad(grad).to(ctx.bias_dtype) \
            if ctx.needs_input_grad[1] else None
        return grad, grad_bias


def _conv_and_bias_pass(conv: nn.Conv2d, x: Tensor, weight: Tensor,
                        bias: Tensor) -> Tensor:
    return _AddBiasFunction.apply(conv._conv_forward(x, weight, None), bias)


def conv2d_bias_pass(conv: nn.Conv2d, x: Tensor, weight: Tensor,
                     bias: Optional[Tensor]) -> Tensor:
    """``conv``'s convolution of ``x`` with these parameters: on a GPU in
    float16 or bfloat16 (autocast's or ``x``'s), where it was timed faster
    at the first call of the size (with the same result), cuDNN's without
    the bias and one Triton pass adding it; else PyTorch's.

    Args:
        conv (nn.Conv2d): The layer whose settings apply.
        x (Tensor): (N, C, H, W).
        weight (Tensor): The weight.
        bias (Tensor, optional): The bias.

    Returns:
        Tensor: The convolution's output.
    """
    pytorch = partial(conv._conv_forward, x, weight, bias)
    x_layout, dtype = layout(x), compute_dtype(x)
    if bias is None or conv.groups != 1 or torch.jit.is_tracing() or \
            torch.compiler.is_compiling() or \
            x_layout not in ('contiguous', 'channels_last') or \
            not level_mlp_triton.applies(x, dtype):
        return pytorch()
    calls = dict(pytorch=pytorch,
                 triton=partial(_conv_and_bias_pass, conv, x, weight, bias))
    key = (x.device, dtype, tuple(x.shape), x_layout,
           tuple(weight.shape), conv.stride, conv.padding, conv.dilation)
    what = (f'convolution of {"x".join(map(str, x.shape))} to '
            f'{weight.shape[0]} channels with its bias')
    return calls[fastest(calls, x.device, _FASTEST_CONV_BIAS, key,
                         always='pytorch', what=what, reference='pytorch')]()


def is_conv2d_with_bias(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (no subclass) of one group with a bias."""
    return type(conv) is nn.Conv2d and conv.groups == 1 and \
        conv.bias is not None


class BiasPassConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose bias, on a GPU in float16 or bfloat16, is
    added by one Triton pass after cuDNN's convolution where that was found
    faster (:func:`conv2d_bias_pass`). Under tracing (FLOP counters, ONNX)
    it runs the convolution itself.

    Build it with :meth:`from_conv`; it is an ``nn.Conv2d``, so code that
    reads ``weight`` or ``bias`` keeps working.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> 'BiasPassConv2d':
        """A BiasPassConv2d sharing the parameters of ``conv``."""
        if not is_conv2d_with_bias(conv):
            raise TypeError('BiasPassConv2d needs an nn.Conv2d of one group '
                            f'with a bias, got {conv!r}')
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                  conv.stride, conv.padding, conv.dilation, 1, True,
                  conv.padding_mode, device='meta')
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return conv2d_bias_pass(self, x, *inference_params(self, x))


def conv_biases_in_one_pass(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``module`` of one group with a bias by
    a :class:`BiasPassConv2d` sharing its weights, in place (after
    :func:`~.pointwise_gemm.pointwise_convs_as_gemm` and
    :func:`~.im2col_gemm.few_channel_convs_as_gemm`, whose GEMMs add the
    bias themselves).

    Args:
        module (nn.Module): A model or any part of it.

    Returns:
        nn.Module: ``module``.
    """
    return replace_layers(module, is_conv2d_with_bias,
                          BiasPassConv2d.from_conv)
