# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A transposed convolution to few output channels (a folded WaveMixHead's
last one: to the classes), computed with zero weights padding the channels
to a multiple of 8 or 16 where cuDNN runs that faster.

In the recipe's training step on an H100 (session 14) the transposed
convolution 128 -> 19 channels to 5x1024x2048 ran at about 90 TFLOP/s, forward
and backward, 6.9 ms, against about 670 for the level MLPs' 256 -> 256: its
19 channels fill a fraction of cuDNN's 64-wide tiles, and 19 half-precision
channels per pixel (38 bytes) are not 16-byte aligned. The extra channels cost
their FLOPs, a slice of the output and a padded gradient; which count serves
is timed at a size's first call (:func:`~.timing.fastest`).
"""
from functools import partial
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .pointwise_gemm import channel_grad
from .timing import fastest

_FASTEST_CHANNELS: dict = {}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_channels(x: Tensor, weight: Tensor,
                    conv: nn.ConvTranspose2d) -> int:
    """The output channels to compute ``conv_transpose2d(x, weight)`` with:
    ``weight``'s own or the next multiple of 8 or 16, whichever ran forward
    and backward fastest at the first call of this size; on CUDA in
    channels_last (cuDNN's kernels), else the weight's own.

    Args:
        x (Tensor): The input, (N, C, H, W).
        weight (Tensor): (C, out, kh, kw), in ``x``'s dtype.
        conv (nn.ConvTranspose2d): The layer whose settings apply.

    Returns:
        int: The channels (the weight's own where nothing is timed).
    """
    out = weight.shape[1]
    if not x.is_cuda or x.dim() != 4 or \
            not x.is_contiguous(memory_format=torch.channels_last) or \
            out % 16 == 0:
        return out
    key = (x.device, x.dtype, tuple(x.shape), tuple(weight.shape),
           conv.stride, conv.padding, conv.output_padding, conv.dilation)
    if key not in _FASTEST_CHANNELS and \
            not torch.cuda.is_current_stream_capturing():
        # a gradient of the output's size for the timed backward passes
        grad = torch.empty_like(conv_transpose_padded(x, weight, None, conv,
                                                      out))
        candidates = sorted({out, _round_up(out, 8), _round_up(out, 16)})
        calls = {
            str(c): partial(_step, grad, x, weight, conv, c)
            for c in candidates
        }
        fastest(calls, x.device, _FASTEST_CHANNELS, key, always=str(out),
                what=f'transposed convolution of {tuple(x.shape)} to {out} '
                'channels computed as')
    return int(_FASTEST_CHANNELS.get(key, out))


def _step(grad: Tensor, x: Tensor, weight: Tensor,
          conv: nn.ConvTranspose2d, channels: int) -> None:
    conv_transpose_padded(x, weight, None, conv, channels)
    conv_transpose_padded_backward(grad, x, weight, False, conv, channels,
                                   (True, True, False))


def conv_transpose_padded(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                          conv: nn.ConvTranspose2d, channels: int) -> Tensor:
    """``conv_transpose2d(x, weight, bias)`` (``conv``'s settings, one
    group) computed with ``channels`` output channels, the extra ones of
    zero weight and dropped from the output: a channels_last copy, which
    adds the bias as it copies (cuDNN computes without it, and PyTorch would
    add it in a pass of its own over the padded output)."""
    out = weight.shape[1]
    if channels == out:
        return F.conv_transpose2d(x, weight, bias, conv.stride, conv.padding,
                                  conv.output_padding, 1, conv.dilation)
    y = F.conv_transpose2d(x, F.pad(weight, (0, 0, 0, 0, 0, channels - out)),
                           None, conv.stride, conv.padding,
                           conv.output_padding, 1, conv.dilation)[:, :out]
    if bias is not None:  # a dense output in the slice's (channels_last) order
        y = torch.add(y, bias.to(y.dtype).view(-1, 1, 1))
    return y.contiguous(memory_format=torch.channels_last)


def conv_transpose_padded_backward(
    grad_out: Tensor, x: Union[Tensor, Callable[[], Tensor]], weight: Tensor,
    has_bias: bool, conv: nn.ConvTranspose2d, channels: int,
    needs: Tuple[bool, bool, bool]
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """The gradients of :func:`conv_transpose_padded` for ``x``, the weight
    and the bias (``needs`` says which), from the output's ``grad_out``
    padded with zeros to ``channels``; the bias's from ``grad_out`` itself
    (:func:`~.pointwise_gemm.channel_grad`).

    Only the weight's gradient needs the input ``x``. It may be given as a
    function that makes it (a recomputation): called only where that
    gradient is needed, and dropped before the input's gradient is made. In
    WaveMixHead's backward, the training step's largest, the input and its
    gradient (5x128x512x1024 each at the recipe's batch) are then not held
    at once. The input's gradient is the convolution of ``grad_out`` by the
    weight (what cuDNN computes for it).
    """
    grad_bias = channel_grad(grad_out) if has_bias and needs[2] else None
    out = weight.shape[1]
    if channels != out:
        padded = torch.empty(
            (grad_out.shape[0], channels, *grad_out.shape[2:]),
            dtype=grad_out.dtype, device=grad_out.device,
            memory_format=torch.channels_last)
        padded[:, :out] = grad_out
        padded[:, out:] = 0
        grad_out = padded
        weight = F.pad(weight, (0, 0, 0, 0, 0, channels - out))
    grad_weight = None
    if needs[1]:
        grad_weight = torch.ops.aten.convolution_backward(
            grad_out, x() if callable(x) else x, weight, None, conv.stride,
            conv.padding, conv.dilation, True, conv.output_padding, 1,
            [False, True, False])[1]
        if channels != out:
            grad_weight = grad_weight[:, :out].contiguous()
    del x
    grad_in = F.conv2d(grad_out, weight, None, conv.stride, conv.padding,
                       conv.dilation) if needs[0] else None
    return grad_in, grad_weight, grad_bias
