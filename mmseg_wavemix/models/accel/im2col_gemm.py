# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convolutions of few input channels (an image stem) as one GEMM, for
GPUs."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .pointwise_gemm import inference_params, linear, replace_layers

# cuDNN's tensor-core kernels take channels in multiples of 8: below that it
# pads the input in passes of its own and runs a kernel of narrow loads
MAX_IN_CHANNELS = 7
# columns of the patch matrix in multiples of 8: 16-byte rows for the GEMM
_ALIGN = 8


def is_few_channel_conv2d(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (no subclass) of at most
    :data:`MAX_IN_CHANNELS` input channels, one group, no dilation and zero
    padding of integer sizes (an image stem's convolution), whose patches
    (``in_channels * kh * kw`` values a pixel) are no more than its output
    channels: the patch matrix is then at most the size of the output."""
    return type(conv) is nn.Conv2d and \
        conv.in_channels <= MAX_IN_CHANNELS and conv.groups == 1 and \
        conv.dilation == (1, 1) and conv.padding_mode == 'zeros' and \
        not isinstance(conv.padding, str) and \
        conv.weight[0].numel() <= conv.out_channels


def patch_matrix(weight: Tensor) -> Tensor:
    """A convolution's weight (O, C, kh, kw) as the matrix that multiplies
    :func:`im2col_linear`'s patch rows: (O, C*kh*kw), zero-padded to a
    multiple of 8 columns."""
    k = weight[0].numel()
    return F.pad(weight.reshape(weight.shape[0], k),
                 (0, -(-k // _ALIGN) * _ALIGN - k))


def im2col_linear(x: Tensor, matrix: Tensor, bias: Optional[Tensor],
                  kernel_size, stride, padding) -> Optional[Tensor]:
    """A convolution of ``x`` as one matrix product: the patches as rows
    (N*H'*W', C*kh*kw, zero-padded to a multiple of 8 columns) times the
    weight (:func:`patch_matrix`), the bias in the GEMM's epilogue; a
    channels_last output. ``x`` may be in any layout: the padding's copy
    gathers an NCHW image's pixels into rows (the data preprocessor gives
    NCHW batches). None while a trace is being recorded.

    cuDNN pads a 3-channel image to 8 channels in passes of its own, runs a
    kernel of 2-byte loads and adds the bias in another pass over its
    output, the stem's largest tensor (session 26, H100, the recipe's
    training step on NCHW images: 1.7 ms a call, 1 ms of it the bias). The
    patch matrix of a 3x3 kernel over 3 channels is 32 columns: about a
    quarter of that output's bytes.
    """
    if torch.jit.is_tracing():
        return None
    rows = x.permute(0, 2, 3, 1)
    n = x.shape[0]
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    patches = F.pad(rows, (0, 0, pw, pw, ph, ph)).unfold(1, kh, sh).unfold(
        2, kw, sw)  # (N, H', W', C, kh, kw): the weight's order
    height, width = patches.shape[1:3]
    k = patches[0, 0, 0].numel()
    cols = patches.new_empty(n * height * width, matrix.shape[1])
    cols[:, :k].view(patches.shape).copy_(patches)
    cols[:, k:].zero_()
    out = linear(cols, matrix, bias)
    return out.view(n, height, width, -1).permute(0, 3, 1, 2)


class Im2colGEMM(nn.Conv2d):
    """A convolution of few input channels run as one matrix product with
    its bias, see :func:`im2col_linear`. While tracing (FLOP counters,
    ONNX) it runs the convolution itself.

    Build it with :meth:`from_conv`; it is an ``nn.Conv2d``, so code that
    reads ``weight`` or ``bias`` keeps working.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> 'Im2colGEMM':
        """An Im2colGEMM sharing the parameters of ``conv``."""
        if not is_few_channel_conv2d(conv):
            raise TypeError(
                f'Im2colGEMM needs an nn.Conv2d of at most {MAX_IN_CHANNELS} '
                'input channels, one group, no dilation, zero padding of '
                'integer sizes and no more values in a patch than output '
                f'channels, got {conv!r}')
        gemm = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                   conv.stride, conv.padding, bias=conv.bias is not None,
                   device='meta')
        gemm.weight, gemm.bias = conv.weight, conv.bias
        gemm.train(conv.training)
        return gemm

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        if torch.is_autocast_enabled(device) and x.dtype == torch.float32:
            # as autocast casts the convolution's input; here before the
            # patches are gathered
            x = x.to(torch.get_autocast_dtype(device))
        out = im2col_linear(x, *inference_params(self, x, patch_matrix),
                            self.kernel_size, self.stride, self.padding)
        return super().forward(x) if out is None else out


def few_channel_convs_as_gemm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``module`` that
    :func:`is_few_channel_conv2d` accepts by an :class:`Im2colGEMM` sharing
    its weights, in place.

    Args:
        module (nn.Module): A model or any part of it.

    Returns:
        nn.Module: ``module``.
    """
    return replace_layers(module, is_few_channel_conv2d,
                          Im2colGEMM.from_conv)
