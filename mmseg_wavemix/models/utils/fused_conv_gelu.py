# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A convolution and the GELU after it as one oneDNN call, for inference."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .activation_memory import is_zero_padded_conv2d
from .wavemix_block import WaveletLevelMLP

_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_conv_pointwise():
    """oneDNN's convolution with an elementwise post-op (the kernel that
    torch.compile's CPU backend fuses to), or None where this build has
    none."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, '_convolution_pointwise', None)


class FusedConvGELU(nn.Module):
    """``gelu(conv(x))`` (exact, erf GELU) for inference.

    On CPU without gradients it is one oneDNN convolution with the GELU as
    its post-op: the activation costs no pass over the convolution's output
    (about a third of a WaveMix level's hidden-layer time) and no fresh
    tensor. Elsewhere (GPU, gradients, other dtypes, a build without oneDNN,
    tracing) it is the two layers as usual. Results are the same up to float
    rounding; under CPU autocast it computes in the autocast dtype, as
    ``conv2d`` would.

    Args:
        conv (nn.Conv2d): The convolution (weights shared, not copied).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not is_zero_padded_conv2d(conv):
            raise TypeError('FusedConvGELU needs an nn.Conv2d with numeric '
                            f'zero padding, got {conv!r}')
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        op = _onednn_conv_pointwise()
        dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled(
            'cpu') else x.dtype
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.conv.weight.requires_grad)
        # Traced (FLOP counters, TorchScript) as the two layers every tool
        # knows.
        if op is None or x.device.type != 'cpu' or needs_grad or \
                dtype not in _FUSED_DTYPES or torch.jit.is_tracing():
            return F.gelu(self.conv(x))
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.to(dtype)
        return op(
            x.to(dtype), conv.weight.to(dtype), bias, list(conv.padding),
            list(conv.stride), list(conv.dilation), conv.groups, 'gelu', [],
            'none')


def fuse_conv_gelu(module: nn.Module) -> nn.Module:
    """Replace ``fc1`` and its exact GELU in every
    :class:`WaveletLevelMLP` of ``module`` by a :class:`FusedConvGELU`, in
    place, for inference (the fused layer has no oneDNN backward; with
    gradients it runs the two layers as before).

    Args:
        module (nn.Module): A model or any part of it.

    Returns:
        nn.Module: ``module``.
    """
    for mlp in module.modules():
        if isinstance(mlp, WaveletLevelMLP) and type(mlp.fc1) is nn.Conv2d \
                and type(mlp.act) is nn.GELU and \
                mlp.act.approximate == 'none':
            mlp.fc1 = FusedConvGELU(mlp.fc1)
            mlp.act = nn.Identity()
    return module
