# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A training BatchNorm and the residual after it (a WaveMix block's finest
level: the block's output), for the memory-efficient level MLPs.

cuDNN's BatchNorm reads its input twice (statistics, then normalisation)
and writes its output; adding the residual reads that output and the
residual and writes the sum: six passes over the block's largest tensor.
On a GPU in float16 and bfloat16 the other way takes the statistics
(``torch.batch_norm_stats``, SyncBN's kernel) and applies them and adds the
residual in one Triton pass over the input, in place
(:func:`~mmseg_wavemix.ops.level_mlp_triton.add_bias_residual_`): four
passes. Either way the backward is the BatchNorm's own from the batch's mean
and inverse standard deviation (``torch.ops.aten.batch_norm_backward``:
cuDNN's kernel where cuDNN would run the BatchNorm), with cuDNN's reserve,
which is empty for a BatchNorm without activation (0 bytes in session 26's
profile). In session 24 the Triton way came with PyTorch's own backward
(two passes of reductions and one of the gradient) and lost to cuDNN's, 1.716
against 1.556 ms forward and backward on an H100. Which way serves is timed,
forward and backward together, at the first call of a size
(:func:`~.timing.fastest`; a way that raises is left out); on other devices
cuDNN's (PyTorch's) way serves.
"""
from functools import partial
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from mmseg_wavemix.ops import level_mlp_triton

from .timing import fastest, layout

# The way found fastest for a BatchNorm and residual (device, dtype, shape,
# memory format): 'cudnn' or 'triton'.
_FASTEST_NORM_RESIDUAL: Dict[tuple, str] = {}


class NormSaved(NamedTuple):
    """What a training BatchNorm keeps for its backward: the batch's mean
    and inverse standard deviation, and cuDNN's reserve (an empty one where
    the statistics are not cuDNN's)."""
    mean: Tensor
    invstd: Tensor
    reserve: Tensor


def _by_cudnn(z: Tensor, residual: Optional[Tensor], weight: Tensor,
              bias: Tensor, running_mean: Tensor, running_var: Tensor,
              momentum: float, eps: float) -> Tuple[Tensor, NormSaved]:
    # what nn.BatchNorm2d runs in training: cuDNN's kernels on CUDA
    out, mean, invstd, reserve = torch.ops.aten._batch_norm_with_update(
        z, weight, bias, running_mean, running_var, momentum, eps)
    if residual is not None:
        out.add_(residual)
    return out, NormSaved(mean, invstd, reserve)


def _statistics(z: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    """The per-channel mean and inverse standard deviation of ``z`` in
    float32: SyncBN's kernel on CUDA (one pass), else from ``var_mean``."""
    if z.is_cuda:
        return torch.batch_norm_stats(z, eps)
    var, mean = torch.var_mean(z.float(), (0, 2, 3), correction=0)
    return mean, (var + eps).rsqrt()


def _by_triton(z: Tensor, residual: Tensor, weight: Tensor, bias: Tensor,
               running_mean: Tensor, running_var: Tensor, momentum: float,
               eps: float) -> Tuple[Tensor, NormSaved]:
    mean, invstd = _statistics(z, eps)
    count = z.numel() // z.shape[1]
    with torch.no_grad():  # as BatchNorm's: unbiased variance in the average
        var = invstd.pow(-2).sub_(eps).mul_(count / max(count - 1, 1))
        running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        running_var.lerp_(var.to(running_var.dtype), momentum)
    scale = weight.float() * invstd
    shift = bias.float() - mean * scale
    out = level_mlp_triton.add_bias_residual_(z, shift, residual, scale)
    return out, NormSaved(mean, invstd, z.new_empty(0, dtype=torch.uint8))


def _triton_applies(z: Tensor, residual: Optional[Tensor]) -> bool:
    return residual is not None and level_mlp_triton.applies(z) and \
        residual.dtype == z.dtype and residual.shape == z.shape and \
        layout(z) in ('contiguous', 'channels_last') and \
        residual.stride() == z.stride()


def batch_norm_residual(z: Tensor, residual: Optional[Tensor],
                        weight: Tensor, bias: Tensor, running_mean: Tensor,
                        running_var: Tensor, momentum: float,
                        eps: float) -> Tuple[Tensor, NormSaved]:
    """``batch_norm(z) + residual`` in training (batch statistics), the
    running statistics updated as ``nn.BatchNorm2d`` does; by whichever
    way (module docstring) was found faster for the size. ``z`` may be
    overwritten by the output; it is not needed for backward (pass it again,
    recomputed, to :func:`batch_norm_residual_backward`).

    Args:
        z (Tensor): The norm's input, (N, C, H, W).
        residual (Tensor, optional): Added to the output, ``z``'s shape.
        weight, bias (Tensor): The norm's affine parameters, (C, ).
        running_mean, running_var (Tensor): Its running statistics,
            updated in place.
        momentum (float): Weight of this batch in the running statistics.
        eps (float): Added to the variance.

    Returns:
        tuple[Tensor, NormSaved]: The output, and what its backward needs.
    """
    args = (weight, bias, running_mean, running_var, momentum, eps)
    if not _triton_applies(z, residual):
        return _by_cudnn(z, residual, *args)
    key = (z.device, z.dtype, tuple(z.shape), layout(z))
    way = _FASTEST_NORM_RESIDUAL.get(key)
    if way is None:  # the candidates built only to be timed, once a size
        what = ('BatchNorm + residual in training '
                f'({"x".join(map(str, z.shape))} '
                f'{str(z.dtype).replace("torch.", "")})')
        calls = {
            name: partial(_forward_and_backward, way, z, residual, *args)
            for name, way in (('cudnn', _by_cudnn), ('triton', _by_triton))
        }
        way = fastest(calls, z.device, _FASTEST_NORM_RESIDUAL, key,
                      always='cudnn', what=what, reference='cudnn')
    return (_by_triton if way == 'triton' else _by_cudnn)(z, residual, *args)


def batch_norm_residual_backward(
        grad_out: Tensor, z: Tensor, weight: Tensor, running_mean: Tensor,
        running_var: Tensor, saved: NormSaved, eps: float,
        needs: Tuple[bool, bool, bool]) -> Tuple[Optional[Tensor], ...]:
    """The gradients of :func:`batch_norm_residual`'s norm for ``z`` (its
    input, recomputed), the weight and the bias (each None where not in
    ``needs``): the BatchNorm's backward (cuDNN's on a GPU) from the saved
    statistics, whichever way computed them. The residual's gradient is
    ``grad_out`` itself."""
    return torch.ops.aten.batch_norm_backward(grad_out, z, weight,
                                              running_mean, running_var,
                                              saved.mean, saved.invstd, True,
                                              eps, list(needs), saved.reserve)


def _forward_and_backward(way, z: Tensor, residual: Tensor, weight: Tensor,
                          bias: Tensor, running_mean: Tensor,
                          running_var: Tensor, momentum: float,
                          eps: float) -> Tuple[Tensor, ...]:
    """One way's forward and backward, for timing: of a copy of ``z`` (the
    Triton way overwrites it) and copies of the running statistics, with
    the residual as the output's gradient (``z`` would give an input
    gradient of 0: the norm does not change along ``z``); the output and
    the three gradients."""
    stats = running_mean.clone(), running_var.clone()
    out, saved = way(z.clone(), residual, weight, bias, *stats, momentum, eps)
    return (out, *batch_norm_residual_backward(
        residual, z, weight, *stats, saved, eps, (True, True, True)))
