# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A convolution and the GELU after it as one oneDNN call, for inference on
CPU."""
from typing import Collection, FrozenSet

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..backbones.wavemix_block import WaveletLevelMLP


def is_zero_padded_conv2d(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (no subclass) with numeric zero padding: what
    the functional convolution kernels reproduce from its attributes."""
    return type(conv) is nn.Conv2d and conv.padding_mode == 'zeros' and \
        not isinstance(conv.padding, str)


def fusable_dtypes() -> FrozenSet[torch.dtype]:
    """The dtypes in which this machine's oneDNN runs a convolution with a
    GELU post-op: float32, and bfloat16 where the CPU has the instructions
    oneDNN needs for it (AVX-512 or AVX-NE-CONVERT); none without the op."""
    if not torch.backends.mkldnn.is_available() or not hasattr(
            torch.ops.mkldnn, '_convolution_pointwise'):
        return frozenset()
    if cpu_has_bf16_convolution():
        return frozenset((torch.float32, torch.bfloat16))
    return frozenset((torch.float32, ))


def cpu_has_bf16_convolution() -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU (else a bf16
    oneDNN convolution raises; PyTorch's own conv2d falls back by itself)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FusedConvGELU(nn.Module):
    """``gelu(conv(x))`` (exact GELU) for inference on CPU.

    In the dtypes it was made for, without gradients, it is one oneDNN
    convolution with the GELU as its post-op: the activation costs no pass
    over the convolution's output (about a third of a WaveMix level's
    hidden-layer time) and no fresh tensor. Otherwise (other dtypes, another
    device, gradients, tracing) it is the two layers. Under CPU autocast it
    computes in the autocast dtype, as ``conv2d`` would.

    Args:
        conv (nn.Conv2d): The convolution (weights shared, not copied).
        dtypes (Collection[torch.dtype]): The dtypes to fuse in, from
            :func:`fusable_dtypes`. Default: float32.
    """

    def __init__(self,
                 conv: nn.Conv2d,
                 dtypes: Collection[torch.dtype] = (torch.float32, )):
        super().__init__()
        if not is_zero_padded_conv2d(conv):
            raise TypeError('FusedConvGELU needs an nn.Conv2d with numeric '
                            f'zero padding, got {conv!r}')
        self.conv = conv
        self.dtypes = frozenset(dtypes)

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled(
            'cpu') else x.dtype
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.conv.weight.requires_grad)
        # Traced (FLOP counters, ONNX) as the two layers every tool knows.
        if dtype not in self.dtypes or x.device.type != 'cpu' or \
                needs_grad or torch.jit.is_tracing():
            return F.gelu(self.conv(x))
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.to(dtype)
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(dtype), conv.weight.to(dtype), bias, list(conv.padding),
            list(conv.stride), list(conv.dilation), conv.groups, 'gelu', [],
            'none')

    def extra_repr(self) -> str:
        return 'dtypes=' + ', '.join(sorted(str(d) for d in self.dtypes))


def fuse_conv_gelu(module: nn.Module,
                   dtypes: Collection[torch.dtype] = None) -> nn.Module:
    """Replace ``fc1`` and its exact GELU in every :class:`WaveletLevelMLP`
    of ``module`` by a :class:`FusedConvGELU`, in place, for inference on
    CPU.

    Args:
        module (nn.Module): A model or any part of it.
        dtypes (Collection[torch.dtype], optional): The dtypes to fuse in.
            Default: None (:func:`fusable_dtypes`).

    Returns:
        nn.Module: ``module``.
    """
    dtypes = fusable_dtypes() if dtypes is None else dtypes
    if not dtypes:
        return module
    for mlp in module.modules():
        if isinstance(mlp, WaveletLevelMLP) and \
                is_zero_padded_conv2d(mlp.fc1) and \
                type(mlp.act) is nn.GELU and mlp.act.approximate == 'none':
            mlp.fc1 = FusedConvGELU(mlp.fc1, dtypes)
            mlp.act = nn.Identity()
    return module
