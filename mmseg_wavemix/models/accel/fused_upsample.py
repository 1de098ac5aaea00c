# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""WaveMix's 2x upsampling (a 4x4, stride 2, padding 1 transposed
convolution) with its bias, and a residual where there is one, in the GPU
kernel found fastest: in the level MLPs for inference
(:class:`~mmseg_wavemix.models.accel.FusedLevelMLP`), and elsewhere (the
decode head's, :class:`FusedUpsample`) for inference and training.

The kernels (``upsample_kernel``):

- ``'triton'``: one Triton kernel
  (:func:`~mmseg_wavemix.ops.level_mlp_triton.conv_transpose_k4s2`);
- ``'triton_tma'``: the same with its operands brought by the tensor memory
  accelerator
  (:func:`~mmseg_wavemix.ops.level_mlp_triton.conv_transpose_k4s2_tma`;
  GPUs of compute capability 9 and later, channels_last, channels of 16
  bytes; elsewhere it is ``'triton'``);
- ``'cudnn'``: cuDNN's without bias, then one Triton pass adding bias and
  residual (:func:`~mmseg_wavemix.ops.level_mlp_triton.add_bias_residual_`);
  PyTorch would add them in two passes, the bias broadcast with 2-byte
  accesses.

On an H200, at WaveMix-256's finest level, cuDNN's product alone took 122
us, the Triton kernel 249 us with bias and residual
(``tools/analysis_tools/benchmark_level_mlp.py`` compares them). Which is
fastest depends on the GPU and the size: by default (``'auto'``) each that
applies is timed at the first call of each size, as ``cudnn.benchmark``
times cuDNN's algorithms, and the fastest is kept for all layers of that
size (the Triton kernels only where their products run on tensor cores,
:func:`~mmseg_wavemix.ops.level_mlp_triton.products_apply`; within a CUDA
graph being recorded, where nothing can be timed, an untimed size takes
``'triton'`` there, else ``'cudnn'``; a candidate that fails, or whose
output differs from cuDNN's by more than rounding, is left out, with a
warning). Sizes count as the Triton kernels' tile sizes are tuned:
by channels and the pixels rounded up to a power of two, so that a dataset
of many image sizes is timed for a few.
"""
from functools import partial
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.wrappers import ConvTranspose2d as MMCVConvTranspose2d
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmseg_wavemix.ops import level_mlp_triton

from ..backbones.wavemix_block import WaveletLevelMLP
from .pointwise_gemm import channel_grad, replace_layers
from .timing import fastest, layout

UPSAMPLE_KERNELS = ('auto', 'triton', 'triton_tma', 'cudnn')
# The kernel ``'auto'`` found fastest for a problem (device, dtype,
# channels, pixels rounded up to a power of two, layouts), shared by the
# layers of that size as a tuner's cache is.
_FASTEST_UPSAMPLE: Dict[tuple, str] = {}


def check_upsample_kernel(upsample_kernel: str) -> None:
    """Raise a ValueError naming the choices for an unknown kernel."""
    if upsample_kernel not in UPSAMPLE_KERNELS:
        raise ValueError(f'upsample_kernel must be one of {UPSAMPLE_KERNELS}'
                         f', got {upsample_kernel!r}')


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype ``x`` is computed in: autocast's where it is on and ``x``
    float32 (as autocast casts), else ``x``'s own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if \
        torch.is_autocast_enabled(device) and x.dtype == torch.float32 \
        else x.dtype


def runs_kernels(module: nn.Module, x: Tensor, dtype: torch.dtype) -> bool:
    """Whether ``module`` (a fused layer) computes ``x`` by the kernels:
    inference (no gradients, eval mode, no tracing or compiling) of a CUDA
    tensor in float16 or bfloat16."""
    return not (module.training or torch.is_grad_enabled() or
                torch.jit.is_tracing() or torch.compiler.is_compiling()) and \
        level_mlp_triton.applies(x, dtype)


def upsample_weights(weight: Tensor, upsample_kernel: str,
                     dtype: torch.dtype) -> Dict[str, Tensor]:
    """The transposed convolution's ``weight`` (C, CO, 4, 4) as each kernel
    that ``upsample_kernel`` may run takes it, by name."""
    weights = {}
    if upsample_kernel != 'cudnn':  # both Triton kernels'
        weights['triton'] = weights['triton_tma'] = \
            level_mlp_triton.pack_conv_transpose_weight(weight).to(dtype)
    if upsample_kernel in ('auto', 'cudnn'):
        weights['cudnn'] = weight.to(dtype)
    return weights


def upsample(kernel: str, x: Tensor, weight: Tensor, bias: Tensor,
             residual: Optional[Tensor]) -> Tensor:
    """``conv_transpose2d(x, stride=2, padding=1) + bias (+ residual)`` by
    ``kernel``, ``weight`` as :func:`upsample_weights` gives it for that
    kernel, ``bias`` float32."""
    if kernel == 'cudnn':
        return level_mlp_triton.add_bias_residual_(
            F.conv_transpose2d(x, weight, None, stride=2, padding=1), bias,
            residual)
    if kernel == 'triton_tma' and level_mlp_triton.tma_applies(x, weight):
        return level_mlp_triton.conv_transpose_k4s2_tma(
            x, weight, bias, residual)
    return level_mlp_triton.conv_transpose_k4s2(x, weight, bias, residual)


def upsample_by(upsample_kernel: str, x: Tensor, weights: Dict[str, Tensor],
                bias: Tensor, residual: Optional[Tensor]) -> Tensor:
    """:func:`upsample` by ``upsample_kernel``, for ``'auto'`` the kernel
    :func:`fastest_upsample` finds; ``weights`` from
    :func:`upsample_weights`."""
    kernel = fastest_upsample(x, weights, bias, residual) \
        if upsample_kernel == 'auto' else upsample_kernel
    return upsample(kernel, x, weights[kernel], bias, residual)


def fastest_upsample(x: Tensor, weights: Dict[str, Tensor], bias: Tensor,
                     residual: Optional[Tensor]) -> str:
    """The kernel of ``weights`` (see :func:`upsample_weights`) found
    fastest for this problem, timing each at its first call (see the
    module)."""
    key = (x.device, x.dtype, x.shape[1], weights['triton'].shape[-1],
           level_mlp_triton.tuning_size(x.numel() // max(x.shape[1], 1)),
           layout(x), None if residual is None else layout(residual))
    if key in _FASTEST_UPSAMPLE:  # without building the candidates
        return _FASTEST_UPSAMPLE[key]
    triton = level_mlp_triton.products_apply(x)
    calls = {
        kernel: partial(upsample, kernel, x, weight, bias, residual)
        for kernel, weight in weights.items()
        if kernel == 'cudnn' or (triton and (
            kernel == 'triton' or level_mlp_triton.tma_applies(x, weight)))
    }
    return fastest(calls, x.device, _FASTEST_UPSAMPLE, key,
                   always='triton' if 'triton' in calls else 'cudnn',
                   what=f'upsampling at {tuple(x.shape)}',
                   reference='cudnn' if 'cudnn' in calls else None)


def _is_upsample(conv: nn.ConvTranspose2d) -> bool:
    """A 4x4 kernel, stride 2, padding 1, with a bias and nothing else."""
    return conv.kernel_size == (4, 4) and conv.stride == (2, 2) and \
        conv.padding == (1, 1) and conv.output_padding == (0, 0) and \
        conv.dilation == (1, 1) and conv.groups == 1 and \
        conv.padding_mode == 'zeros' and conv.bias is not None


def can_fuse_upsample(conv: nn.Module) -> bool:
    """Whether ``conv`` is an ``nn.ConvTranspose2d`` (itself, or mmcv's,
    which ``ConvModule`` builds) of a 4x4 kernel, stride 2, padding 1, with
    a bias and nothing else."""
    return type(conv) in (nn.ConvTranspose2d, MMCVConvTranspose2d) and \
        _is_upsample(conv)


class _UpsampleFunction(torch.autograd.Function):
    """:class:`FusedUpsample` with gradients: the forward by the kernels
    (the bias inside), the backward by PyTorch's gradients of the
    transposed convolution."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor,
                weights: Dict[str, Tensor], bias_float: Tensor,
                upsample_kernel: str) -> Tensor:
        ctx.param_dtype = weight.dtype
        ctx.save_for_backward(
            x, weights['cudnn'] if 'cudnn' in weights else weight.to(x.dtype))
        return upsample_by(upsample_kernel, x, weights, bias_float, None)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_out = grad_out.to(x.dtype)
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [2, 2], [1, 1], [1, 1], True, [0, 0],
            1, [needs[0], needs[1], False])
        # the bias's by one pass where timed faster (PyTorch's sum is slow)
        grad_bias = channel_grad(grad_out) if needs[2] else None
        grad_weight, grad_bias = (None if g is None else g.to(ctx.param_dtype)
                                  for g in (grad_weight, grad_bias))
        return grad_x, grad_weight, grad_bias, None, None, None


class FusedUpsample(nn.ConvTranspose2d):
    """A 4x4, stride 2, padding 1 transposed convolution that computes on a
    GPU with its bias in the kernel found fastest (see the module), in
    float16 or bfloat16 (the autocast dtype, or the input's), in inference
    and in training (there its gradients are PyTorch's, cuDNN's on a GPU).
    Elsewhere (CPU, float32, tracing, ``torch.compile``, an ``output_size``)
    it is the transposed convolution.

    Build it with :meth:`from_conv`; it is an ``nn.ConvTranspose2d``
    sharing the parameters, so code that reads ``weight`` or ``bias`` keeps
    working. The weights are packed and cast at its first call in each
    dtype, and again after they change (an optimizer step, moving or
    casting the module).

    Args:
        *args, **kwargs: Those of ``nn.ConvTranspose2d``.
        upsample_kernel (str): ``'auto'``, ``'triton'``, ``'triton_tma'``
            or ``'cudnn'``. Default: ``'auto'``.
    """

    def __init__(self, *args, upsample_kernel: str = 'auto', **kwargs):
        super().__init__(*args, **kwargs)
        check_upsample_kernel(upsample_kernel)
        if not _is_upsample(self):
            raise TypeError('FusedUpsample needs a kernel of 4, stride 2, '
                            'padding 1 and a bias')
        self.upsample_kernel = upsample_kernel
        self._packed: Dict[torch.dtype, tuple] = {}

    @classmethod
    def from_conv(cls,
                  conv: nn.ConvTranspose2d,
                  upsample_kernel: str = 'auto') -> 'FusedUpsample':
        """A FusedUpsample sharing the parameters of ``conv``."""
        if not can_fuse_upsample(conv):
            raise TypeError('FusedUpsample needs an nn.ConvTranspose2d of '
                            'kernel 4, stride 2, padding 1 and a bias, got '
                            f'{conv!r}')
        fused = cls(conv.in_channels, conv.out_channels, 4, 2, 1,
                    device='meta', upsample_kernel=upsample_kernel)
        fused.weight, fused.bias = conv.weight, conv.bias
        fused.train(conv.training)
        return fused

    def _apply(self, fn, *args, **kwargs):
        self._packed = {}  # moved or cast: pack again
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def _weights(self, dtype: torch.dtype, fresh: bool = False):
        """The packed weight and float32 bias in ``dtype``: kept while the
        parameters stay as they are, packed anew where ``fresh``."""
        if fresh:
            return self._pack(dtype)
        # the parameters as they are now: an optimizer step changes them in
        # place (their version)
        key = tuple((p.data_ptr(), p._version)
                    for p in (self.weight, self.bias))
        if self._packed.get(dtype, (None, ))[0] != key:
            self._packed[dtype] = (key, *self._pack(dtype))
        return self._packed[dtype][1:]

    def _pack(self, dtype: torch.dtype):
        return upsample_weights(self.weight, self.upsample_kernel,
                                dtype), self.bias.float()

    def forward(self,
                x: Tensor,
                output_size: Optional[list] = None) -> Tensor:
        dtype = compute_dtype(x)
        if output_size is not None or torch.jit.is_tracing() or \
                torch.compiler.is_compiling() or \
                not level_mlp_triton.applies(x, dtype):
            return super().forward(x, output_size)
        training = torch.is_grad_enabled()
        # a training graph (TrainingCUDAGraphs) packs them at each replay:
        # optimizer steps change them between replays
        weights, bias = self._weights(
            dtype, training and x.is_cuda
            and torch.cuda.is_current_stream_capturing())
        x = x.to(dtype)
        if training:
            return _UpsampleFunction.apply(x, self.weight, self.bias, weights,
                                           bias, self.upsample_kernel)
        return upsample_by(self.upsample_kernel, x, weights, bias, None)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, ' \
            f'upsample_kernel={self.upsample_kernel!r}'


def fuse_upsamples(module: nn.Module,
                   upsample_kernel: str = 'auto') -> nn.Module:
    """Replace every transposed convolution of ``module`` that
    :func:`can_fuse_upsample` accepts, outside the level MLPs (fused ones
    fuse theirs; in training a BatchNorm follows theirs, and their
    memory-efficient versions leave the bias out), by a
    :class:`FusedUpsample` sharing its parameters, in place, for inference
    or training on a GPU.

    Args:
        module (nn.Module): A model or any part of it.
        upsample_kernel (str): See :class:`FusedUpsample`.
            Default: ``'auto'``.

    Returns:
        nn.Module: ``module``.
    """
    from .fused_level_mlp import inside_fused_level_mlps
    check_upsample_kernel(upsample_kernel)
    theirs = inside_fused_level_mlps(module) | {
        id(m)
        for mlp in module.modules() if isinstance(mlp, WaveletLevelMLP)
        for m in mlp.modules()
    }
    return replace_layers(
        module, lambda m: can_fuse_upsample(m) and id(m) not in theirs,
        partial(FusedUpsample.from_conv, upsample_kernel=upsample_kernel))
