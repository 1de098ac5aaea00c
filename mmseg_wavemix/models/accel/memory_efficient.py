# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Level MLPs that keep fewer activations for backward in training
(``WaveMix(memory_efficient=True)``).

Autograd keeps the input of every layer that needs it. In a WaveMix level
much of that is avoidable cheaply:

- ``conv2(gelu(conv1(x)))``: the convolutions keep ``x`` and ``gelu(h)``,
  the GELU keeps ``h = conv1(x)``. :func:`conv_gelu_conv2d` keeps ``x``
  only and recomputes ``h`` and ``gelu(h)`` in backward (in WaveMix a 1x1
  convolution, about 3% of a block's FLOPs, for a third of its memory).
- ``batch_norm(z) + x`` (the finest level, whose output is the block's):
  BatchNorm keeps its input ``z``, a full-resolution tensor. In float32
  :func:`batch_norm_add` keeps the output and ``x`` instead, which the next
  layer and the block's own first convolution keep anyway, and recovers
  ``z = (out - x - beta) / gamma / invstd + mean`` in backward, as in-place
  activated BatchNorm (Rota Bulo et al., CVPR 2018).
- In lower precision (autocast) that recovery would lose too much:
  :func:`level_mlp_keeping_its_input` keeps only the level's input and
  recomputes all of the level in backward but the BatchNorm statistics (a
  transposed and a 1x1 convolution more than above, per level and step).
  Inside a block (:func:`mix_levels_keeping_block_input`) the wavelet
  levels in those inputs are not kept either but recomputed from the
  block's input, once per block (:class:`BlockLevels`): what stays is the
  block's input, which its first convolution keeps anyway, and the coarser
  levels' outputs (with :func:`keep_wavelet_levels` the levels too: time
  for memory). The gradient of each level's LL band is added in place into
  the finer level's (:class:`_WaveletLevelsFunction`), and each level
  MLP gives its input's gradient as two dense tensors, the level's and the
  coarser output's. On CUDA in channels_last the GELU's backward and the
  first convolution's bias gradient come from one pass
  (:mod:`~mmseg_wavemix.ops.gelu_triton`), and the block's GEMM reduction
  adds the residual's gradient in its own input-gradient GEMM
  (:class:`_ReductionFunction`).
- :func:`conv_transpose_of_recomputed`: a transposed convolution that
  recomputes its input from an earlier one (WaveMixHead's last upsampling).

Gradients equal autograd's up to float rounding. It works under
``torch.compile`` (where the BatchNorm input is kept: the recovery's check
depends on data) and with a BatchNorm of one process; with SyncBN across
processes the BatchNorm input is kept, saying so once.
"""
import warnings
from contextlib import nullcontext
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_wavemix.ops import gelu_triton, haar_dwt_packed, haar_idwt

from ..backbones.wavemix_block import WaveletLevelMLP, WaveMixBlock
from .norm_residual import batch_norm_residual, batch_norm_residual_backward
from .padded_classes import (conv_transpose_padded,
                             conv_transpose_padded_backward, padded_channels)
from .pointwise_gemm import (LinearGELU, PointwiseGEMM, channel_grad,
                             pointwise_linear, pointwise_linear_backward,
                             pointwise_linear_gelu, pointwise_weight_grad)

# BatchNorm scales below this (in absolute value) make the recovery of its
# input inaccurate; such layers keep their input as usual.
MIN_ABS_BN_WEIGHT = 1e-3


def _cast(dtype: torch.dtype, *params: Optional[Tensor]):
    """The parameters in the activations' dtype (autocast's, if it ran)."""
    return tuple(None if p is None else p.to(dtype) for p in params)


def _autocast_dtype(device: str) -> Optional[torch.dtype]:
    """Autocast's dtype on ``device`` where it is on, else None."""
    return torch.get_autocast_dtype(device) if \
        torch.is_autocast_enabled(device) else None


def _as_autocast(t: Optional[Tensor]) -> Optional[Tensor]:
    """``t`` as autocast casts an activation: float32 to its dtype, other
    dtypes (and everything where autocast is off) as they are."""
    if t is None or t.dtype != torch.float32:
        return t
    dtype = _autocast_dtype(t.device.type)
    return t if dtype is None else t.to(dtype)


def _autocast(device: str, dtype: Optional[torch.dtype]):
    """Autocast as a forward ran it (``dtype`` None: off), for recomputing
    that forward in backward."""
    return nullcontext() if dtype is None else torch.autocast(device,
                                                              dtype=dtype)


def _conv(x: Tensor, weight: Tensor, bias: Optional[Tensor],
          conv: nn.Conv2d) -> Tensor:
    """``conv`` with these parameters; as a GEMM where ``conv`` is a
    :class:`PointwiseGEMM` (prepare_for_training) and ``x`` channels_last.
    """
    out = pointwise_linear(x, weight, bias) if isinstance(
        conv, PointwiseGEMM) else None
    if out is not None:
        return out
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                    conv.groups)


def _conv_transpose(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                    conv: nn.ConvTranspose2d) -> Tensor:
    return F.conv_transpose2d(x, weight, bias, conv.stride, conv.padding,
                              conv.output_padding, conv.groups, conv.dilation)


def _conv_backward(grad_out: Tensor,
                   inputs: Tensor,
                   weight: Tensor,
                   has_bias: bool,
                   conv: nn.Module,
                   needs: Tuple[bool, ...],
                   grad_in_plus: Optional[Tensor] = None,
                   param_dtype: Optional[torch.dtype] = None):
    """Gradients of ``conv(inputs)`` (an ``nn.Conv2d`` or
    ``nn.ConvTranspose2d``) for the input, weight and bias. Under autocast
    the forward ran in a lower precision than the weight: so does this, and
    the weight's gradients are cast back to ``param_dtype`` (default: the
    weight's; for a weight already cast, the parameter's). ``grad_in_plus``,
    another gradient of ``inputs``, is added to the input's (in the GEMM of
    a :class:`PointwiseGEMM`)."""
    grad_out = grad_out.to(inputs.dtype)
    needs = (needs[0], needs[1], has_bias and needs[2])
    grads = pointwise_linear_backward(
        grad_out, inputs, weight.to(inputs.dtype), needs,
        grad_in_plus) if isinstance(conv, PointwiseGEMM) else None
    if grads is None:
        transposed = isinstance(conv, nn.ConvTranspose2d)
        grads = torch.ops.aten.convolution_backward(
            grad_out, inputs, weight.to(inputs.dtype),
            [conv.out_channels] if has_bias else None, conv.stride,
            conv.padding, conv.dilation, transposed,
            conv.output_padding if transposed else [0, 0], conv.groups,
            list(needs))
        if grad_in_plus is not None and grads[0] is not None:
            grads[0].add_(grad_in_plus)
    grad_in, grad_weight, grad_bias = grads
    param_dtype = param_dtype or weight.dtype
    if grad_weight is not None:
        grad_weight = grad_weight.to(param_dtype)
    if grad_bias is not None:
        grad_bias = grad_bias.to(param_dtype)
    return grad_in, grad_weight, grad_bias


def _gelu_backward_(grad: Tensor, hidden: Tensor,
                    bias_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """The exact GELU's backward, in place into ``grad``; with ``bias_grad``
    also its sum over pixels (the gradient of the bias in ``hidden``) from
    the same pass on CUDA in channels_last (:mod:`~mmseg_wavemix.ops.
    gelu_triton`), else None (the convolution's backward sums it)."""
    if bias_grad and gelu_triton.applies(grad, hidden):
        return gelu_triton.gelu_backward_with_bias_grad_(grad, hidden)
    return torch.ops.aten.gelu_backward.grad_input(
        grad, hidden, grad_input=grad), None


class _ConvGELUConvFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight1: Tensor, bias1: Optional[Tensor],
                weight2: Tensor, bias2: Optional[Tensor], conv1: nn.Conv2d,
                conv2: nn.Conv2d) -> Tensor:
        ctx.save_for_backward(x, weight1, bias1, weight2)
        ctx.convs = conv1, conv2
        ctx.has_bias = bias1 is not None, bias2 is not None
        return _conv(
            F.gelu(_conv(x, weight1, bias1, conv1)), weight2, bias2, conv2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight1, bias1, weight2 = ctx.saved_tensors
        conv1, conv2 = ctx.convs
        needs = ctx.needs_input_grad
        hidden = _conv(x, *_cast(x.dtype, weight1, bias1), conv1)
        activation = F.gelu(hidden)
        grad_act, grad_weight2, grad_bias2 = _conv_backward(
            grad_out, activation, weight2, ctx.has_bias[1], conv2,
            (True, needs[3], needs[4]))
        del activation
        # into grad_act: no third hidden-sized tensor at once
        grad_hidden, grad_bias1 = _gelu_backward_(
            grad_act, hidden, ctx.has_bias[0] and needs[2])
        del hidden
        grad_x, grad_weight1, conv_grad_bias1 = _conv_backward(
            grad_hidden, x, weight1, ctx.has_bias[0] and grad_bias1 is None,
            conv1, (needs[0], needs[1], needs[2]))
        grad_bias1 = conv_grad_bias1 if grad_bias1 is None else \
            grad_bias1.to(weight1.dtype)
        return (grad_x, grad_weight1, grad_bias1, grad_weight2, grad_bias2,
                None, None)


def conv_gelu_conv2d(x: Tensor, conv1: nn.Conv2d,
                     conv2: nn.Conv2d) -> Tensor:
    """``conv2(gelu(conv1(x)))`` (exact GELU) that keeps only ``x`` for
    backward and recomputes ``conv1(x)`` and the GELU there. Under autocast
    it computes in the autocast dtype, as ``conv2d`` would.

    Args:
        x (Tensor): Input, (N, C, H, W).
        conv1 (nn.Conv2d): The convolution before the GELU.
        conv2 (nn.Conv2d): The convolution after the GELU.

    Returns:
        Tensor: ``conv2(gelu(conv1(x)))``.
    """
    if torch.is_autocast_enabled(x.device.type):
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


def batch_norm_add(z: Tensor, norm: _BatchNorm, x: Tensor) -> Tensor:
    """``norm(z) + x`` for a BatchNorm in training that keeps the output and
    ``x`` for backward, not ``z``.

    Used for ``nn.BatchNorm2d`` and mmengine's ``_BatchNormXd`` (what SyncBN
    becomes in one process) with affine parameters, float32 tensors and no
    ``|weight|`` below :data:`MIN_ABS_BN_WEIGHT`, in training mode (not
    frozen by ``norm_eval``), not in a graph being compiled. Otherwise it is
    ``norm(z) + x`` as usual, with a warning the first time for SyncBN
    across processes (its statistics need an all-reduce this function does
    not do) and for lower precision (``z`` recovered from a float16/bfloat16
    output would lose too much). The running statistics are updated exactly
    as ``norm`` would.

    Args:
        z (Tensor): Input of the norm, (N, C, H, W).
        norm (_BatchNorm): The norm layer.
        x (Tensor): The residual, same shape as ``z``.

    Returns:
        Tensor: ``norm(z) + x``. Do not modify it in place before backward
        (autograd would raise an error).
    """
    if torch.compiler.is_compiling():
        # the |weight| check below depends on data: it would break the graph
        return norm(z).add_(x)
    reason = None
    if not _is_plain_batch_norm(norm):
        reason = (f'{type(norm).__name__} is not a one-process BatchNorm '
                  '(SyncBN across processes)')
    elif z.dtype != torch.float32 or x.dtype != torch.float32:
        reason = f'the activations are {z.dtype} (autocast)'
    if reason is not None:
        _warn_once(f'memory_efficient: the finest level keeps its BatchNorm '
                   f'input: {reason}; the recomputation of the hidden '
                   'layers still applies')
    if reason is not None or not norm.training or not norm.affine or \
            bool(norm.weight.abs().min() < MIN_ABS_BN_WEIGHT):
        # In place: BatchNorm does not keep its output for backward.
        return norm(z).add_(x)
    return _BatchNormAddFunction.apply(z, x, norm.weight, norm.bias,
                                       norm.running_mean, norm.running_var,
                                       _count_batch(norm), norm.eps)


def _count_batch(norm: _BatchNorm) -> float:
    """nn.BatchNorm2d's bookkeeping before a training step: the batch
    counted, and the momentum of the running statistics (momentum None: a
    cumulative average)."""
    momentum = 0. if norm.momentum is None else norm.momentum
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1. / float(norm.num_batches_tracked)
    return momentum


class _WaveletLevelsFunction(torch.autograd.Function):
    """The packed levels of ``ll`` (finest first), each the Haar transform
    of the LL band of the one before, as ``WaveMixBlock.wavelet_levels``
    after its reduction. In backward each level's LL gradient is added in
    place into the finer level's gradient (made by a level MLP that keeps
    its input: a fresh dense tensor); autograd would write it into zeros of
    the finer level's size in NCHW and add the two, in a slow mixed-layout
    kernel on CUDA where the model is channels_last."""

    @staticmethod
    def forward(ctx, ll: Tensor, count: int):
        levels, ctx.sizes = [], []
        for _ in range(count):
            ctx.sizes.append(ll.shape[-2:])
            levels.append(haar_dwt_packed(ll))
            ll = levels[-1][:, :ll.shape[1]]
        return tuple(levels)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Optional[Tensor]):
        grad_ll = None
        for k in range(len(grads) - 1, -1, -1):
            grad = grads[k]
            if grad is None:  # a level without gradient of its own
                if grad_ll is None:
                    continue
                grad = torch.cat((grad_ll, grad_ll.new_zeros(
                    grad_ll.shape[0], 3 * grad_ll.shape[1],
                    *grad_ll.shape[-2:])), 1)
            elif grad_ll is not None:
                grad[:, :grad_ll.shape[1]] += grad_ll
            c = grad.shape[1] // 4
            grad_ll = haar_idwt(grad[:, :c], grad[:, c:].unflatten(1, (c, 3)),
                                ctx.sizes[k])
        return grad_ll, None


class _ReductionFunction(torch.autograd.Function):
    """A block's 1x1 reduction as a GEMM (:class:`PointwiseGEMM`, a
    channels_last input) whose input gradient takes in the block's residual
    gradient, left in ``levels`` by the finest level MLP: one GEMM with the
    sum in its epilogue, where autograd would add two gradients of the
    block's largest tensor in a pass of its own."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                conv: PointwiseGEMM, levels: 'BlockLevels') -> Tensor:
        ctx.conv, ctx.levels, ctx.has_bias = conv, levels, bias is not None
        ctx.param_dtype = weight.dtype
        weight, bias = _cast(x.dtype, weight, bias)
        ctx.save_for_backward(x, weight)  # as cast: not cast again there
        return pointwise_linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        residual_grad, ctx.levels.residual_grad = ctx.levels.residual_grad, \
            None
        return (*_conv_backward(grad_out, x, weight, ctx.has_bias, ctx.conv,
                                ctx.needs_input_grad, residual_grad,
                                ctx.param_dtype), None, None)


def _wavelet_levels(block: nn.Module, x: Tensor,
                    source: Optional['BlockLevels'] = None) -> List[Tensor]:
    """``block.wavelet_levels(x)`` (the same levels), whose backward adds
    the levels' gradients in place, where every level MLP keeps only its
    input and the transform is this package's; else the block's own. Given
    ``source`` (whose input ``x`` is the block's residual too), a GEMM
    reduction of a channels_last ``x`` also adds the residual's gradient
    (:class:`_ReductionFunction`), and ``source`` is told so."""
    if block.dwt.backend == 'native' and all(
            isinstance(mlp, MemoryEfficientLevelMLP)
            and mlp.keeps_only_its_input(x) for mlp in block.mlps):
        reduction = block.reduction
        if source is not None and isinstance(reduction, PointwiseGEMM) and \
                x.dim() == 4 and x.permute(0, 2, 3, 1).is_contiguous():
            source.reduction_adds_residual_grad = True
            reduced = _ReductionFunction.apply(x, reduction.weight,
                                               reduction.bias, reduction,
                                               source)
        else:
            reduced = reduction(x)
        return list(_WaveletLevelsFunction.apply(reduced, block.level))
    return block.wavelet_levels(x)


class BlockLevels:
    """The packed wavelet levels of a block's input for the backward of its
    level MLPs, recomputed from the input (the block's 1x1 reduction and
    Haar transforms, a few percent of the block) instead of kept: once, at
    the first level that needs them, then handed out one level each. With
    ``keep`` the level MLPs keep their levels instead (time for memory, see
    :func:`keep_wavelet_levels`).

    Args:
        block (WaveMixBlock): The block (its ``wavelet_levels``).
        x (Tensor): Its input (kept anyway by the reduction), as
            ``input`` for the level MLPs' forward.
        keep (bool): The level MLPs keep their levels. Default: False.
    """

    def __init__(self, block: nn.Module, x: Tensor, keep: bool = False):
        self.block = block
        self.input = x
        self.keep = keep
        self.autocast = _autocast_dtype(x.device.type)  # the forward's
        self._levels = {}
        # Set where the block's reduction adds the gradient of the residual
        # (the block's input) in its own input-gradient GEMM: the finest
        # level MLP leaves that gradient here instead of returning it.
        self.reduction_adds_residual_grad = False
        self.residual_grad: Optional[Tensor] = None

    def pop(self, k: int, x: Tensor) -> Tensor:
        """Level ``k`` of ``x`` (the input, as unpacked by autograd, which
        checks that it was not modified in place)."""
        if k not in self._levels:
            with torch.no_grad(), _autocast(x.device.type, self.autocast):
                self._levels = dict(enumerate(self.block.wavelet_levels(x)))
        return self._levels.pop(k)


def _fc1_gelu(level: Tensor,
              coarser: Optional[Tensor],
              weight: Tensor,
              bias: Optional[Tensor],
              fc1: nn.Conv2d,
              pre_activation: bool = False) -> LinearGELU:
    """``gelu(fc1(cat([level, coarser])))`` with these parameters; for a
    :class:`PointwiseGEMM` of channels_last inputs without the
    concatenation where Triton's kernel was found faster
    (:func:`pointwise_linear_gelu`)."""
    if isinstance(fc1, PointwiseGEMM):
        out = pointwise_linear_gelu(level, coarser, weight, bias,
                                    pre_activation)
        if out is not None:
            return out
    x = level if coarser is None else torch.cat((level, coarser), 1)
    hidden = _conv(x, weight, bias, fc1)
    return LinearGELU(x, hidden, F.gelu(hidden))


def _pointwise_input_grads(
        grad_out: Tensor, weight: Tensor,
        split: int) -> Optional[Tuple[Tensor, Tensor]]:
    """The gradients of a 1x1 convolution's input channels ``[0, split)``
    and ``[split, C)`` for a channels_last ``grad_out``, as two GEMMs, each
    a dense channels_last tensor (slices of one gradient would be strided:
    adding them to other gradients and normalising them runs slow kernels
    on CUDA); None for other layouts (in NCHW a slice of channels is dense
    per image, and one GEMM is faster on CPU)."""
    matrix = weight.view(weight.shape[0], -1)
    # the column blocks as they are: BLAS takes the matrix's row stride, no
    # copy of each per call
    grads = [
        pointwise_linear(grad_out, part.t(), None)
        for part in (matrix[:, :split], matrix[:, split:])
    ]
    return None if grads[0] is None else (grads[0], grads[1])


class _LevelMLPFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, level: Tensor, coarser: Optional[Tensor],
                residual: Optional[Tensor], block_input: Optional[Tensor],
                levels: Optional[BlockLevels], k: int, w1: Tensor,
                b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                wt: Tensor, bt: Optional[Tensor], weight: Tensor,
                bias: Tensor, running_mean: Tensor, running_var: Tensor,
                momentum: float, eps: float, mlp: WaveletLevelMLP) -> Tensor:
        ctx.mlp, ctx.eps, ctx.has_bt = mlp, eps, bt is not None
        ctx.levels, ctx.k, ctx.level_channels = levels, k, level.shape[1]
        ctx.param_dtype = w1.dtype  # the gradients' (cast weights are kept)
        w1, b1, w2, b2, wt = _cast(level.dtype, w1, b1, w2, b2, wt)
        # The transposed conv's bias is left out: the BatchNorm in training
        # subtracts it again with the mean (its gradient is 0), one pass over
        # the largest tensor less. Only the running mean keeps it.
        z = _conv_transpose(
            _conv(_fc1_gelu(level, coarser, w1, b1, mlp.fc1).out, w2, b2,
                  mlp.fc2), wt, None, mlp.upsample)
        # what nn.BatchNorm2d runs in training, and the residual (in place
        # of z, or cuDNN's kernels and an addition: norm_residual)
        out, saved = batch_norm_residual(z, residual, weight, bias,
                                         running_mean, running_var, momentum,
                                         eps)
        # the level itself only where it is not recomputed; the weights
        # as cast here (autocast would keep those too): backward computes
        # with them without casting them again, a kernel each
        keep = levels is None or levels.keep
        ctx.save_for_backward(level if keep else None, coarser,
                              None if keep else block_input, w1, b1, w2, b2,
                              wt, weight)
        del z
        if bt is not None:
            running_mean.add_(bt, alpha=momentum)
        ctx.stats = running_mean, running_var, saved
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        level, coarser, block_input, w1, b1, w2, b2, wt, weight = \
            ctx.saved_tensors
        mlp, needs = ctx.mlp, ctx.needs_input_grad
        if level is None:
            level = ctx.levels.pop(ctx.k, block_input)
        x, hidden, activation = _fc1_gelu(level, coarser, w1, b1, mlp.fc1,
                                          pre_activation=True)
        # x: the input as one tensor; else (Triton's kernel made no
        # concatenation) its parts, for fc1's weight gradient
        parts = (level, coarser) if x is None else None
        del level
        dtype = ctx.param_dtype
        h = _conv(activation, w2, b2, mlp.fc2)
        z = _conv_transpose(h, wt, None, mlp.upsample)
        grad_z, grad_weight, grad_bias = batch_norm_residual_backward(
            grad_out, z, weight, *ctx.stats, ctx.eps,
            (True, needs[12], needs[13]))
        del z
        grad_h, grad_wt, _ = _conv_backward(grad_z, h, wt, False, mlp.upsample,
                                            (True, needs[10], False),
                                            param_dtype=dtype)
        del grad_z, h
        grad_bt = wt.new_zeros(mlp.upsample.out_channels, dtype=dtype) \
            if ctx.has_bt and needs[11] else None
        grad_act, grad_w2, grad_b2 = _conv_backward(
            grad_h, activation, w2, b2 is not None, mlp.fc2,
            (True, needs[8], needs[9]), param_dtype=dtype)
        del grad_h, activation
        grad_hidden, grad_b1 = _gelu_backward_(grad_act, hidden,
                                               b1 is not None and needs[7])
        del hidden
        has_coarser = coarser is not None
        split = _pointwise_input_grads(
            grad_hidden, w1, ctx.level_channels) if has_coarser and (
                needs[0] or needs[1]) else None
        grad_w1 = pointwise_weight_grad(grad_hidden, parts) \
            if x is None and needs[6] else None
        if x is None and ((needs[6] and grad_w1 is None) or
                          ((needs[0] or needs[1]) and split is None)):
            x = torch.cat(parts, 1)  # not channels_last: as the layers
        if x is None:
            grad_x = None
            if grad_b1 is None and b1 is not None and needs[7]:
                grad_b1 = channel_grad(grad_hidden)
        else:
            grad_x, grad_w1, conv_grad_b1 = _conv_backward(
                grad_hidden, x, w1, b1 is not None and grad_b1 is None,
                mlp.fc1,
                ((needs[0] or needs[1]) and split is None, needs[6],
                 needs[7]),
                param_dtype=dtype)
            grad_b1 = conv_grad_b1 if grad_b1 is None else grad_b1
        grad_w1 = None if grad_w1 is None else grad_w1.to(dtype)
        grad_b1 = None if grad_b1 is None else grad_b1.to(dtype)
        grad_level, grad_coarser = split or (grad_x, None)
        if has_coarser and grad_x is not None:
            grad_level = grad_x[:, :ctx.level_channels]
            grad_coarser = grad_x[:, ctx.level_channels:]
        grad_residual = grad_out if needs[2] else None
        if grad_residual is not None and ctx.levels is not None and \
                ctx.levels.reduction_adds_residual_grad:
            ctx.levels.residual_grad, grad_residual = grad_residual, None
        return (grad_level, grad_coarser if needs[1] else None,
                grad_residual, None, None, None, grad_w1,
                grad_b1, grad_w2, grad_b2, grad_wt, grad_bt, grad_weight,
                grad_bias, None, None, None, None, None)


def level_mlp_keeping_its_input(mlp: WaveletLevelMLP,
                                x: Tensor,
                                residual: Optional[Tensor] = None,
                                coarser: Optional[Tensor] = None,
                                levels: Optional[BlockLevels] = None,
                                k: int = 0) -> Tensor:
    """``mlp(x, residual, coarser)`` in training that keeps only ``x`` and
    ``coarser`` (and per-channel statistics) for backward: the 1x1
    convolutions, GELU, transposed convolution and the BatchNorm's input are
    recomputed there. Given the block's :class:`BlockLevels`, ``x`` (its
    level ``k``) is not kept either but recomputed from the block's input.
    For a BatchNorm of one process (SyncBN across processes needs its own
    statistics: use the layers), with affine parameters and running
    statistics, in training mode.
    Under autocast it computes in the autocast dtype, as the layers would;
    the running statistics are updated exactly as the norm would.

    Args:
        mlp (WaveletLevelMLP): The level MLP (exact GELU, no dropout).
        x (Tensor): Its input, (N, C, H, W), or its first channels if
            ``coarser`` is given.
        residual (Tensor, optional): Added to the output. Default: None.
        coarser (Tensor, optional): The rest of its input channels (the
            coarser level's output). Default: None.
        levels (BlockLevels, optional): Where ``x`` comes from. Default:
            None (``x`` is kept).
        k (int): Which of ``levels`` ``x`` is. Default: 0.

    Returns:
        Tensor: ``mlp(x, residual, coarser)``. Do not modify it in place
        before backward.
    """
    x, coarser = _as_autocast(x), _as_autocast(coarser)
    fc1, fc2, upsample, norm = mlp.fc1, mlp.fc2, mlp.upsample, mlp.norm
    return _LevelMLPFunction.apply(
        x, coarser, residual, None if levels is None else levels.input,
        levels, k, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
        upsample.weight, upsample.bias, norm.weight, norm.bias,
        norm.running_mean, norm.running_var, _count_batch(norm), norm.eps,
        mlp)


class _ConvTransposeOfRecomputedFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, features_out: Tensor, x: Tensor, weight: Tensor,
                bias: Optional[Tensor], features: nn.Module,
                conv: nn.ConvTranspose2d) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.features, ctx.conv, ctx.has_bias = features, conv, \
            bias is not None
        ctx.autocast = _autocast_dtype(x.device.type)
        ctx.dtype = features_out.dtype
        weight, bias = _cast(features_out.dtype, weight, bias)
        # few output channels (the classes): maybe padded, see padded_classes
        ctx.channels = padded_channels(features_out, weight, conv)
        return conv_transpose_padded(features_out, weight, bias, conv,
                                     ctx.channels)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        conv, needs, dtype = ctx.conv, ctx.needs_input_grad, ctx.dtype

        def features_out() -> Tensor:
            # the forward's features again, in its precision, for the
            # weight's gradient only (dropped before the input's is made)
            with torch.no_grad(), _autocast(x.device.type, ctx.autocast):
                return ctx.features(x)

        grad_in, grad_weight, grad_bias = conv_transpose_padded_backward(
            grad_out.to(dtype), features_out, weight.to(dtype), ctx.has_bias,
            conv, ctx.channels, (needs[0], needs[2], needs[3]))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(weight.dtype)
        return grad_in, None, grad_weight, grad_bias, None, None


def conv_transpose_of_recomputed(features: nn.Module, x: Tensor,
                                 weight: Tensor, bias: Optional[Tensor],
                                 conv: nn.ConvTranspose2d) -> Tensor:
    """``conv_transpose2d(features(x), weight, bias)`` (``conv``'s stride,
    padding, output padding and dilation; one group) that keeps ``x``, not
    ``features(x)``, for backward and recomputes ``features(x)`` there for
    the weight's gradient. For WaveMixHead's last transposed convolution,
    whose input is its largest tensor: ``x`` is kept by ``features`` anyway.
    ``features`` must compute the same in backward (no norm in training
    mode, no dropout). Under autocast it computes in the autocast dtype, as
    the layer would.

    Args:
        features (nn.Module): The layers before the convolution.
        x (Tensor): Their input.
        weight (Tensor): (in, out, kh, kw), e.g. folded with a classifier.
        bias (Tensor, optional): (out, ).
        conv (nn.ConvTranspose2d): The layer whose settings apply.

    Returns:
        Tensor: The convolution's output.
    """
    # cast once: ``features`` then keeps the tensor kept here
    x = _as_autocast(x)
    features_out = _as_autocast(features(x))
    return _ConvTransposeOfRecomputedFunction.apply(features_out, x, weight,
                                                    bias, features, conv)


_warned = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


class MemoryEfficientLevelMLP(WaveletLevelMLP):
    """A :class:`WaveletLevelMLP` that, in training, keeps fewer activations
    for backward. In float32: only its input for the 1x1 conv, GELU and 1x1
    conv (:func:`conv_gelu_conv2d`), and for the finest level (the one with
    a residual) the block output instead of its BatchNorm's input
    (:func:`batch_norm_add`). In other dtypes (autocast): only its input
    (:func:`level_mlp_keeping_its_input`). Same parameters and state dict as
    the plain MLP; in evaluation, without gradients or under tracing it is
    the plain MLP.

    Args:
        *args, **kwargs: Those of :class:`WaveletLevelMLP`; it needs the
            exact GELU, no dropout and a BatchNorm.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        act = self.act
        if type(act) is not nn.GELU or act.approximate != 'none' or \
                self.drop.p or not isinstance(self.norm, _BatchNorm):
            raise ValueError(
                'memory_efficient needs the exact GELU, no dropout and a '
                f'BatchNorm in the level MLPs; got {act}, dropout '
                f'{self.drop.p} and {type(self.norm).__name__}: set '
                'memory_efficient=False')

    def forward(self,
                x: Tensor,
                residual: Optional[Tensor] = None,
                coarser: Optional[Tensor] = None) -> Tensor:
        if not (self.training and torch.is_grad_enabled()) or \
                torch.jit.is_tracing():
            return super().forward(x, residual, coarser)
        if self.keeps_only_its_input(x):
            return level_mlp_keeping_its_input(self, x, residual, coarser)
        if coarser is not None:
            x = torch.cat((x, coarser), dim=1)
        z = self.upsample(conv_gelu_conv2d(x, self.fc1, self.fc2))
        if residual is None:
            return self.norm(z)
        return batch_norm_add(z, self.norm, residual)

    def keeps_only_its_input(self, x: Tensor) -> bool:
        """Whether a training forward of ``x`` runs
        :func:`level_mlp_keeping_its_input` (in lower precision; in float32
        the BatchNorm input is recovered instead, for free)."""
        norm = self.norm
        float32 = x.dtype == torch.float32 and \
            not torch.is_autocast_enabled(x.device.type)
        return self.training and torch.is_grad_enabled() and \
            not float32 and not torch.jit.is_tracing() and \
            not torch.compiler.is_compiling() and \
            _is_plain_batch_norm(norm) and norm.training and norm.affine \
            and norm.track_running_stats


def keep_wavelet_levels(model: nn.Module, keep: bool = True) -> nn.Module:
    """Let the memory-efficient WaveMix blocks of ``model`` keep their
    wavelet levels for backward in lower precision (autocast) instead of
    recomputing them from the block's input (:class:`BlockLevels`): per
    block and step a 1x1 reduction and the Haar transforms less, for the
    levels' memory (WaveMix-256/16 at the recipe's batch of 5 at 1024x2048:
    16 blocks of 112 MB). In place; gradients unchanged.

    Args:
        model (nn.Module): A model or any part of it.
        keep (bool): Keep them (False: recompute them again).
            Default: True.

    Returns:
        nn.Module: ``model``.
    """
    for block in model.modules():
        if isinstance(block, WaveMixBlock) and block.memory_efficient:
            block.keep_levels = keep
    return model


def mix_levels_keeping_block_input(block: nn.Module, x: Tensor) -> Tensor:
    """What a memory-efficient :class:`WaveMixBlock` computes from its input
    ``x`` (the level MLPs, coarse to fine, plus ``x``). Where the level MLPs
    keep only their inputs (training in lower precision), they do not keep
    the wavelet levels either: the levels are recomputed from ``x``, which
    the block's first convolution keeps anyway (:class:`BlockLevels`); only
    the coarser levels' outputs (D/2 channels each) are kept.

    Args:
        block (WaveMixBlock): A block with :class:`MemoryEfficientLevelMLP`
            s.
        x (Tensor): Its input.

    Returns:
        Tensor: The block's output.
    """
    # cast once: the reduction then keeps the tensor the levels need
    block_input = _as_autocast(x)
    source = BlockLevels(block, block_input,
                         getattr(block, 'keep_levels', False))
    # the residual is the reduction's own input (not a cast copy): its
    # gradient can be added in the reduction's backward
    levels = _wavelet_levels(block, block_input,
                             source if block_input is x else None)
    out = None
    for k in range(block.level - 1, -1, -1):
        mlp, residual = block.mlps[k], x if k == 0 else None
        if isinstance(mlp, MemoryEfficientLevelMLP) and \
                mlp.keeps_only_its_input(levels[k]):
            out = level_mlp_keeping_its_input(mlp, levels[k], residual, out,
                                              source, k)
        else:
            out = mlp(levels[k], residual, out)
    # The input is the level MLPs' and the reduction's saved tensor, which
    # backward frees block by block; the autograd graph keeps `source` until
    # it is freed as a whole (a CUDA graph's recording: for good).
    source.input = None
    return out
