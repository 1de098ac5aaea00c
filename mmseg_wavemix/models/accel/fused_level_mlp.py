# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A WaveMix level MLP as three GPU kernels, for inference."""
from functools import partial
from typing import Dict, Optional, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg_wavemix.ops import level_mlp_triton

from ..backbones.wavemix_block import WaveletLevelMLP
from .fused_upsample import (can_fuse_upsample, check_upsample_kernel,
                             compute_dtype, runs_kernels, upsample_by,
                             upsample_weights)
from .pointwise_gemm import (pointwise_linear, pointwise_linear_gelu,
                             replace_layers)


def can_fuse_level_mlp(mlp: nn.Module) -> bool:
    """Whether :class:`FusedLevelMLP` computes ``mlp``: a
    :class:`WaveletLevelMLP` whose norm is folded (an ``nn.Identity``), with
    the exact GELU, 1x1 convolutions and a 4x4, stride 2, padding 1
    transposed convolution with biases."""
    if not isinstance(mlp, WaveletLevelMLP):
        return False
    fc1, fc2, up = mlp.fc1, mlp.fc2, mlp.upsample
    return type(mlp.norm) is nn.Identity and type(mlp.act) is nn.GELU and \
        mlp.act.approximate == 'none' and all(
            isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and
            fc.stride == (1, 1) and fc.padding in ((0, 0), 'valid') and
            fc.groups == 1 and fc.bias is not None for fc in (fc1, fc2)) and \
        can_fuse_upsample(up)


class FusedLevelMLP(nn.Module):
    """A level MLP (BatchNorm folded) for inference on a GPU in three
    kernels instead of six or seven:

    1. ``gelu(fc1(cat([x, coarser])))``, one Triton GEMM
       (:func:`~mmseg_wavemix.ops.level_mlp_triton.linear_gelu`): no
       concatenation in memory, no separate pass of the GELU; or the
       concatenation, cuBLAS and the GELU where these were faster at the
       first call of the size, or the kernel's result differed from
       theirs (:func:`~.pointwise_gemm.pointwise_linear_gelu`).
    2. ``fc2``, a cuBLAS GEMM with its bias (channels_last input).
    3. The transposed convolution, its bias (with the folded BatchNorm) and
       the residual, by the upsampling kernel found fastest
       (:mod:`~mmseg_wavemix.models.accel.fused_upsample`).

    It computes in float16 or bfloat16 (the autocast dtype, or the input's),
    accumulating in float32, on channels_last inputs (a prepared model's
    layout; in other layouts the first step is the layers'). The weights
    are packed and cast at its first call in each dtype (moving or casting
    the module packs them again; a prepared model's weights are fixed
    anyway). Elsewhere (CPU, float32, gradients, training mode, tracing,
    ``torch.compile``) it runs the plain layers.

    Args:
        mlp (WaveletLevelMLP): The level MLP, see :func:`can_fuse_level_mlp`
            (kept, and shared with the plain path).
        upsample_kernel (str): ``'auto'``, ``'triton'``, ``'triton_tma'``
            or ``'cudnn'`` (:mod:`~mmseg_wavemix.models.accel.
            fused_upsample`). Default: ``'auto'``.
    """

    def __init__(self, mlp: WaveletLevelMLP, upsample_kernel: str = 'auto'):
        super().__init__()
        check_upsample_kernel(upsample_kernel)
        if not can_fuse_level_mlp(mlp):
            raise TypeError(
                'FusedLevelMLP needs a WaveletLevelMLP with its norm folded '
                '(fuse_norm_layers), the exact GELU, 1x1 convolutions and a '
                f'4x4/2 transposed convolution with biases, got {mlp!r}')
        self.mlp = mlp
        self.upsample_kernel = upsample_kernel
        self.train(mlp.training)
        self._packed: Dict[torch.dtype, Tuple[Tensor, ...]] = {}

    def _apply(self, fn, *args, **kwargs):
        self._packed.clear()  # moved or cast: pack again
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def _weights(self, dtype: torch.dtype) -> Tuple:
        """fc1's weight and bias (cast, and as the Triton kernel takes them),
        fc2's, the upsampling weight of each kernel in use (by name) and its
        bias."""
        if dtype not in self._packed:
            fc1, fc2, up = self.mlp.fc1, self.mlp.fc2, self.mlp.upsample
            w1 = fc1.weight.to(dtype)
            self._packed[dtype] = (
                w1, fc1.bias.to(dtype),
                (level_mlp_triton.pack_linear_weight(w1), fc1.bias.float()),
                fc2.weight.to(dtype), fc2.bias.to(dtype),
                upsample_weights(up.weight, self.upsample_kernel, dtype),
                up.bias.float())
        return self._packed[dtype]

    def forward(self,
                x: Tensor,
                residual: Optional[Tensor] = None,
                coarser: Optional[Tensor] = None) -> Tensor:
        dtype = compute_dtype(x)
        if not runs_kernels(self, x, dtype):
            return self.mlp(x, residual, coarser)
        w1, b1, fc1_kernel, w2, b2, wt, bt = self._weights(dtype)
        x = x.to(dtype)
        coarser = None if coarser is None else coarser.to(dtype)
        fc1 = pointwise_linear_gelu(x, coarser, w1, b1,
                                    kernel_weights=fc1_kernel)
        hidden = F.gelu(F.conv2d(
            x if coarser is None else torch.cat((x, coarser), 1), w1,
            b1)) if fc1 is None else fc1.out
        ff = pointwise_linear(hidden, w2, b2)
        if ff is None:  # not channels_last
            ff = F.conv2d(hidden, w2, b2)
        return upsample_by(self.upsample_kernel, ff, wt, bt, residual)

    def extra_repr(self) -> str:
        return f'upsample_kernel={self.upsample_kernel!r}'


def fuse_level_mlps(module: nn.Module,
                    upsample_kernel: str = 'auto') -> nn.Module:
    """Replace every :class:`WaveletLevelMLP` of ``module`` that
    :func:`can_fuse_level_mlp` accepts by a :class:`FusedLevelMLP`, in
    place, for inference on a GPU (after :func:`fuse_norm_layers`).

    Args:
        module (nn.Module): A model or any part of it.
        upsample_kernel (str): See :class:`FusedLevelMLP`.
            Default: ``'auto'``.

    Returns:
        nn.Module: ``module``.
    """
    fused = inside_fused_level_mlps(module)
    return replace_layers(
        module, lambda m: can_fuse_level_mlp(m) and id(m) not in fused,
        partial(FusedLevelMLP, upsample_kernel=upsample_kernel))


def inside_fused_level_mlps(module: nn.Module) -> Set[int]:
    """The ids of the modules inside the :class:`FusedLevelMLP` s of
    ``module`` (fused already, or part of one)."""
    return {
        id(m)
        for fused in module.modules() if isinstance(fused, FusedLevelMLP)
        for m in fused.modules()
    }
