# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A WaveMix level MLP as three GPU kernels, for inference."""
import statistics
import time
import warnings
from functools import partial
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg_wavemix.ops import level_mlp_triton

from ..backbones.wavemix_block import WaveletLevelMLP
from .pointwise_gemm import pointwise_linear

# The upsampling kernel ``'auto'`` found fastest for a problem (device, dtype,
# shapes and strides), shared by the level MLPs of that size as a tuner's
# cache is.
_FASTEST_UPSAMPLE: Dict[tuple, str] = {}
# Timed calls of each candidate, interleaved, after one untimed call each.
_ROUNDS = 3


def _time_ms(fn: Callable[[], Tensor], device: torch.device) -> float:
    """Milliseconds of ``fn()``: GPU time by CUDA events, else wall time."""
    if device.type != 'cuda':
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


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
        type(up) is nn.ConvTranspose2d and up.kernel_size == (4, 4) and \
        up.stride == (2, 2) and up.padding == (1, 1) and \
        up.output_padding == (0, 0) and up.dilation == (1, 1) and \
        up.groups == 1 and up.bias is not None


class FusedLevelMLP(nn.Module):
    """A level MLP (BatchNorm folded) for inference on a GPU in three
    kernels instead of six or seven:

    1. ``gelu(fc1(cat([x, coarser])))``, one Triton GEMM
       (:func:`~mmseg_wavemix.ops.level_mlp_triton.linear_gelu`): no
       concatenation in memory, no separate pass of the GELU.
    2. ``fc2``, a cuBLAS GEMM with its bias (channels_last input).
    3. The transposed convolution, its bias (with the folded BatchNorm) and
       the residual, in one of three ways (``upsample_kernel``):

       - ``'triton'``: one Triton kernel
         (:func:`~mmseg_wavemix.ops.level_mlp_triton.conv_transpose_k4s2`);
       - ``'triton_tma'``: the same with its operands brought by the tensor
         memory accelerator
         (:func:`~mmseg_wavemix.ops.level_mlp_triton.conv_transpose_k4s2_tma`;
         GPUs of compute capability 9 and later, channels_last; elsewhere
         it is ``'triton'``);
       - ``'cudnn'``: cuDNN's without bias, then one Triton pass adding bias
         and residual
         (:func:`~mmseg_wavemix.ops.level_mlp_triton.add_bias_residual_`).

       On an H200, at WaveMix-256's finest level, cuDNN's product alone
       took 122 us, the Triton kernel 249 us with bias and residual
       (``tools/analysis_tools/benchmark_level_mlp.py`` compares them).
       Which is fastest depends on the GPU and the size: by default
       (``'auto'``) each that applies is timed at the first call of each
       size, as ``cudnn.benchmark`` times cuDNN's algorithms, and the
       fastest is kept for all level MLPs of that size (within a CUDA graph
       being recorded, where nothing can be timed, an untimed size takes
       ``'triton'``; a candidate that fails there is left out, with a
       warning).

    It computes in float16 or bfloat16 (the autocast dtype, or the input's),
    accumulating in float32. The weights are packed and cast at its first
    call in each dtype (moving or casting the module packs them again; a
    prepared model's weights are fixed anyway). Elsewhere (CPU, float32,
    gradients, training mode, tracing, ``torch.compile``) it runs the plain
    layers.

    Args:
        mlp (WaveletLevelMLP): The level MLP, see :func:`can_fuse_level_mlp`
            (kept, and shared with the plain path).
        upsample_kernel (str): ``'auto'``, ``'triton'``, ``'triton_tma'``
            or ``'cudnn'``, see above. Default: ``'auto'``.
    """
    UPSAMPLE_KERNELS = ('auto', 'triton', 'triton_tma', 'cudnn')

    def __init__(self, mlp: WaveletLevelMLP, upsample_kernel: str = 'auto'):
        super().__init__()
        if upsample_kernel not in self.UPSAMPLE_KERNELS:
            raise ValueError(f'upsample_kernel must be one of '
                             f'{self.UPSAMPLE_KERNELS}, got '
                             f'{upsample_kernel!r}')
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
        """fc1's weight and bias, fc2's, the upsampling weight of each
        kernel in use (by name) and its bias, as the kernels take them."""
        if dtype not in self._packed:
            fc1, fc2, up = self.mlp.fc1, self.mlp.fc2, self.mlp.upsample
            upsample = {}
            if self.upsample_kernel != 'cudnn':  # both Triton kernels'
                upsample['triton'] = upsample['triton_tma'] = \
                    level_mlp_triton.pack_conv_transpose_weight(
                        up.weight).to(dtype)
            if self.upsample_kernel in ('auto', 'cudnn'):
                upsample['cudnn'] = up.weight.to(dtype)
            self._packed[dtype] = (
                level_mlp_triton.pack_linear_weight(fc1.weight).to(dtype),
                fc1.bias.float(), fc2.weight.to(dtype), fc2.bias.to(dtype),
                upsample, up.bias.float())
        return self._packed[dtype]

    @staticmethod
    def _upsample(kernel: str, ff: Tensor, weight: Tensor, bias: Tensor,
                  residual: Optional[Tensor]) -> Tensor:
        if kernel == 'cudnn':
            return level_mlp_triton.add_bias_residual_(
                F.conv_transpose2d(ff, weight, None, stride=2, padding=1),
                bias, residual)
        if kernel == 'triton_tma' and level_mlp_triton.tma_applies(
                ff, weight):
            return level_mlp_triton.conv_transpose_k4s2_tma(
                ff, weight, bias, residual)
        return level_mlp_triton.conv_transpose_k4s2(ff, weight, bias,
                                                    residual)

    def _fastest_upsample(self, ff: Tensor, weights: Dict[str, Tensor],
                          bias: Tensor, residual: Optional[Tensor]) -> str:
        """The upsampling kernel found fastest for this problem, timing
        each at its first call (see the class)."""
        key = (ff.device, ff.dtype, ff.shape, ff.stride(),
               None if residual is None else residual.stride())
        if key in _FASTEST_UPSAMPLE:
            return _FASTEST_UPSAMPLE[key]
        if ff.is_cuda and torch.cuda.is_current_stream_capturing():
            return 'triton'
        calls = {
            kernel: partial(self._upsample, kernel, ff, weight, bias,
                            residual)
            for kernel, weight in weights.items() if kernel != 'triton_tma'
            or level_mlp_triton.tma_applies(ff, weight)
        }
        for kernel, call in list(calls.items()):
            try:
                call()  # untimed: a Triton kernel is tuned at its first call
            except Exception as error:  # noqa: BLE001
                if kernel == 'triton':  # the one that always serves
                    raise
                warnings.warn(f'FusedLevelMLP: the {kernel!r} upsampling '
                              f'failed at {tuple(ff.shape)}, left out: '
                              f'{type(error).__name__}: {error}')
                del calls[kernel]
        times = {kernel: [] for kernel in calls}
        for _ in range(_ROUNDS):
            for kernel, call in calls.items():
                times[kernel].append(_time_ms(call, ff.device))
        fastest = min(times, key=lambda k: statistics.median(times[k]))
        _FASTEST_UPSAMPLE[key] = fastest
        return fastest

    def forward(self,
                x: Tensor,
                residual: Optional[Tensor] = None,
                coarser: Optional[Tensor] = None) -> Tensor:
        device = x.device.type
        # autocast's: float32 computes in its dtype, others in their own
        dtype = torch.get_autocast_dtype(device) if \
            torch.is_autocast_enabled(device) and \
            x.dtype == torch.float32 else x.dtype
        if self.training or torch.is_grad_enabled() or \
                torch.jit.is_tracing() or torch.compiler.is_compiling() or \
                not level_mlp_triton.applies(x, dtype):
            return self.mlp(x, residual, coarser)
        w1, b1, w2, b2, wt, bt = self._weights(dtype)
        x = x.to(dtype)
        coarser = None if coarser is None else coarser.to(dtype)
        hidden = level_mlp_triton.linear_gelu(x, coarser, w1, b1)
        ff = pointwise_linear(hidden, w2, b2)
        if ff is None:  # not channels_last
            ff = F.conv2d(hidden, w2, b2)
        kernel = self.upsample_kernel
        if kernel == 'auto':
            kernel = self._fastest_upsample(ff, wt, bt, residual)
        return self._upsample(kernel, ff, wt[kernel], bt, residual)

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
    for parent in list(module.modules()):
        if isinstance(parent, FusedLevelMLP):  # fused already
            continue
        for name, child in parent.named_children():
            if can_fuse_level_mlp(child):
                setattr(parent, name, FusedLevelMLP(child, upsample_kernel))
    return module
