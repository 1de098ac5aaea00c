# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Training layers that keep fewer activations for backward.

Autograd keeps the input of every layer that needs it. In a WaveMix level
much of that is avoidable cheaply:

- ``conv2(gelu(conv1(x)))``: the convolutions keep ``x`` and ``gelu(h)``,
  the GELU keeps ``h = conv1(x)``. :func:`conv_gelu_conv2d` keeps ``x``
  only and recomputes ``h`` and ``gelu(h)`` in backward (in WaveMix a 1x1
  convolution, about 3% of a block's FLOPs, for a third of its memory).
- ``batch_norm(z) + x`` (the finest level, whose output is the block's):
  BatchNorm keeps ``z``. :func:`batch_norm_add` keeps the output and ``x``
  instead, which the next layer and the block's own first convolution keep
  anyway, and recovers ``z = (out - x - beta) / gamma / invstd + mean`` in
  backward, as in-place activated BatchNorm (Rota Bulo et al., CVPR 2018).

Gradients equal autograd's up to float rounding. Both fall back to the
plain layers where the trick does not apply (see each function).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

# BatchNorm scales below this (in absolute value) make the recovery of its
# input inaccurate; such layers keep their input as usual.
MIN_ABS_BN_WEIGHT = 1e-3


def _conv(x: Tensor, weight: Tensor, bias: Optional[Tensor],
          conv: nn.Conv2d) -> Tensor:
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                    conv.groups)


def _conv_backward(grad_out: Tensor, inputs: Tensor, weight: Tensor,
                   has_bias: bool, conv: nn.Conv2d, needs: Tuple[bool, ...]):
    """Gradients of ``conv(inputs)`` for the input, weight and bias. Under
    autocast the forward ran in a lower precision than the weight: so does
    this, and the weight's gradients are cast back."""
    grad_in, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_out.to(inputs.dtype), inputs, weight.to(inputs.dtype),
        [weight.shape[0]] if has_bias else None, conv.stride, conv.padding,
        conv.dilation, False, [0, 0], conv.groups,
        [needs[0], needs[1], has_bias and needs[2]])
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    if grad_bias is not None:
        grad_bias = grad_bias.to(weight.dtype)
    return grad_in, grad_weight, grad_bias


class _ConvGELUConvFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight1: Tensor, bias1: Optional[Tensor],
                weight2: Tensor, bias2: Optional[Tensor], conv1: nn.Conv2d,
                conv2: nn.Conv2d) -> Tensor:
        ctx.save_for_backward(x, weight1, bias1, weight2)
        ctx.convs = conv1, conv2
        ctx.has_bias = bias1 is not None, bias2 is not None
        return F.conv2d(
            F.gelu(_conv(x, weight1, bias1, conv1)), weight2, bias2,
            conv2.stride, conv2.padding, conv2.dilation, conv2.groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight1, bias1, weight2 = ctx.saved_tensors
        conv1, conv2 = ctx.convs
        needs = ctx.needs_input_grad
        hidden = _conv(x, weight1.to(x.dtype),
                       None if bias1 is None else bias1.to(x.dtype), conv1)
        activation = F.gelu(hidden)
        grad_act, grad_weight2, grad_bias2 = _conv_backward(
            grad_out, activation, weight2, ctx.has_bias[1], conv2,
            (True, needs[3], needs[4]))
        del activation
        # into grad_act: no third hidden-sized tensor at once
        grad_hidden = torch.ops.aten.gelu_backward.grad_input(
            grad_act, hidden, grad_input=grad_act)
        del hidden
        grad_x, grad_weight1, grad_bias1 = _conv_backward(
            grad_hidden, x, weight1, ctx.has_bias[0], conv1,
            (needs[0], needs[1], needs[2]))
        return (grad_x, grad_weight1, grad_bias1, grad_weight2, grad_bias2,
                None, None)


def is_zero_padded_conv2d(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (no subclass) with numeric zero padding: what
    the functional convolution kernels reproduce from its attributes."""
    return type(conv) is nn.Conv2d and conv.padding_mode == 'zeros' and \
        not isinstance(conv.padding, str)


def conv_gelu_conv2d(x: Tensor, conv1: nn.Conv2d,
                     conv2: nn.Conv2d) -> Tensor:
    """``conv2(gelu(conv1(x)))`` (exact GELU) that keeps only ``x`` for
    backward and recomputes ``conv1(x)`` and the GELU there.

    The plain layers run without gradients, for convolutions that are not
    ``nn.Conv2d`` with numeric zero padding, and under tracing.

    Args:
        x (Tensor): Input, (N, C, H, W).
        conv1 (nn.Conv2d): The convolution before the GELU.
        conv2 (nn.Conv2d): The convolution after the GELU.

    Returns:
        Tensor: ``conv2(gelu(conv1(x)))``.
    """
    if not torch.is_grad_enabled() or not is_zero_padded_conv2d(conv1) or \
            not is_zero_padded_conv2d(conv2) or torch.jit.is_tracing():
        return conv2(F.gelu(conv1(x)))
    if torch.is_autocast_enabled(x.device.type):
        # the dtype conv2d computes in under autocast
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return _ConvGELUConvFunction.apply(x, conv1.weight, conv1.bias,
                                       conv2.weight, conv2.bias, conv1, conv2)


class _BatchNormAddFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, z: Tensor, x: Tensor, weight: Tensor, bias: Tensor,
                running_mean: Optional[Tensor], running_var: Optional[Tensor],
                momentum: float, eps: float) -> Tensor:
        out, mean, invstd = torch.native_batch_norm(z, weight, bias,
                                                    running_mean, running_var,
                                                    True, momentum, eps)
        out.add_(x)
        ctx.save_for_backward(out, x, weight, bias, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        out, x, weight, bias, mean, invstd = ctx.saved_tensors
        # z = (out - x - bias) / (weight * invstd) + mean, per channel, into
        # one temporary, then BatchNorm's own backward kernel (any layout)
        scale = (weight * invstd).reciprocal().view(-1, 1, 1)
        shift = mean.view(-1, 1, 1) - bias.view(-1, 1, 1) * scale
        z = torch.sub(out, x).mul_(scale).add_(shift)
        grad_z, grad_weight, grad_bias = \
            torch.ops.aten.native_batch_norm_backward(
                grad_out, z, weight, None, None, mean, invstd, True, ctx.eps,
                [ctx.needs_input_grad[0], ctx.needs_input_grad[2],
                 ctx.needs_input_grad[3]])
        return grad_z, grad_out, grad_weight, grad_bias, None, None, None, \
            None


def _is_plain_batch_norm(norm: nn.Module) -> bool:
    """BatchNorm that computes as ``_BatchNorm.forward``: nn.BatchNorm2d and
    mmengine's ``_BatchNormXd`` (what SyncBN becomes in one process), not
    SyncBatchNorm across processes or subclasses with a forward of their
    own."""
    return isinstance(norm, _BatchNorm) and \
        type(norm).forward is _BatchNorm.forward


def batch_norm_add(z: Tensor, norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(z) + x`` that keeps the output and ``x`` for backward, not
    ``z``.

    Used for a BatchNorm (``nn.BatchNorm2d``, or mmengine's ``_BatchNormXd``
    that SyncBN becomes in one process) in training mode with affine
    parameters, float32 tensors and no ``|weight|`` below
    :data:`MIN_ABS_BN_WEIGHT`; otherwise (other norms, SyncBN across
    processes, evaluation, no gradients, lower precision, tracing) it is
    ``norm(z) + x`` as usual. The running
    statistics are updated exactly as ``norm`` would.

    Args:
        z (Tensor): Input of the norm, (N, C, H, W).
        norm (nn.Module): The norm layer.
        x (Tensor): The residual, same shape as ``z``.

    Returns:
        Tensor: ``norm(z) + x``. Do not modify it in place before backward
        (autograd would raise an error).
    """
    if not (torch.is_grad_enabled() and _is_plain_batch_norm(norm)
            and norm.training and norm.affine and z.dtype == torch.float32
            and x.dtype == torch.float32 and not torch.jit.is_tracing()
            and bool(norm.weight.abs().min() >= MIN_ABS_BN_WEIGHT)):
        # In place: BatchNorm does not keep its output for backward.
        return norm(z).add_(x)
    momentum = 0. if norm.momentum is None else norm.momentum
    if norm.track_running_stats:
        # nn.BatchNorm2d's bookkeeping (momentum None: cumulative average)
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1. / float(norm.num_batches_tracked)
    return _BatchNormAddFunction.apply(z, x, norm.weight, norm.bias,
                                       norm.running_mean, norm.running_var,
                                       momentum, norm.eps)
