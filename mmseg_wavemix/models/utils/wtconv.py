# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""WTConv (Finder et al., "Wavelet Convolutions for Large Receptive Fields",
ECCV 2024), on this package's Haar transform."""
from typing import List, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmseg_wavemix.ops import haar_dwt, haar_idwt

# The authors' layer keeps its fixed Haar filters (and a fixed stride
# filter) as parameters; here they are constants, so those checkpoint
# entries are checked and dropped on loading.
_AUTHORS_FIXED_FILTERS = ('wt_filter', 'iwt_filter', 'stride_filter')
WAVELETS = ('db1', 'haar')


class ChannelScale(nn.Module):
    """Learnable per-channel factor, ``weight`` of shape (1, C, 1, 1).

    The shape the authors' checkpoints store (mmcv's ``LayerScale`` keeps
    shape (C, ), so their weights would not load into it).

    Args:
        channels (int): Number of channels C.
        init_value (float): Initial factor. Default: 1.0.
    """

    def __init__(self, channels: int, init_value: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class WTConv2d(nn.Module):
    """Wavelet convolution, a drop-in for a depthwise
    ``nn.Conv2d(C, C, kernel_size, stride, padding=kernel_size // 2,
    groups=C)`` with a receptive field of ``2 ** wt_levels * kernel_size``.

    The input's Haar transform is cascaded on the low-pass band for
    ``wt_levels`` levels. At each level the four sub-bands (LL, LH, HL, HH)
    go through their own depthwise ``kernel_size`` conv and a per-channel
    scale (initialised to 0.1); the inverse transform then rebuilds the
    result from the coarsest level up, adding each level's convolved LL to
    the reconstruction from the level below it. A base depthwise conv with a
    per-channel scale (initialised to 1) of the input is added, and
    ``stride`` subsamples the sum, as in the paper's implementation.
    Odd heights/widths are zero-padded at the bottom/right per level and the
    reconstruction is cropped back, so any input size works.

    Parameters: ``C*k^2 (+C bias) + C`` for the base conv and its scale, plus
    ``4*C*k^2 + 4*C`` per level. The names (``base_conv``, ``base_scale``,
    ``wavelet_convs``, ``wavelet_scale``) are the authors', so their
    checkpoints load (their fixed filters are dropped).

    Args:
        in_channels (int): Channels C.
        out_channels (int, optional): Must equal ``in_channels`` (the layer
            is depthwise); accepted so that it can replace ``nn.Conv2d``.
            Default: None (= ``in_channels``).
        kernel_size (int): Odd kernel size k of every depthwise conv.
            Default: 5.
        stride (int): 1 or 2; the output is the stride-1 result subsampled.
            Default: 1.
        bias (bool): Bias of the base conv. Default: True.
        wt_levels (int): Wavelet levels; 0 leaves only the base conv.
            Default: 1.
        wt_type (str): The wavelet, ``'db1'`` (= ``'haar'``), the only one
            supported. Default: 'db1'.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = None,
                 kernel_size: int = 5,
                 stride: int = 1,
                 bias: bool = True,
                 wt_levels: int = 1,
                 wt_type: str = 'db1'):
        super().__init__()
        if out_channels is not None and out_channels != in_channels:
            raise ValueError(
                f'WTConv2d is depthwise: out_channels ({out_channels}) must '
                f'equal in_channels ({in_channels})')
        if not isinstance(kernel_size, int) or kernel_size < 1 or \
                kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be an odd integer >= 1, got '
                             f'{kernel_size!r}')
        if stride not in (1, 2):
            raise ValueError(f'stride must be 1 or 2, got {stride!r}')
        if not isinstance(wt_levels, int) or wt_levels < 0:
            raise ValueError(f'wt_levels must be an integer >= 0, got '
                             f'{wt_levels!r}')
        if wt_type not in WAVELETS:
            raise ValueError(f'wt_type must be one of {WAVELETS} (Haar), got '
                             f'{wt_type!r}')
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.wt_levels = wt_levels

        self.base_conv = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=bias)
        self.base_scale = ChannelScale(in_channels, 1.0)
        # Sub-band channels are interleaved per input channel: c * 4 + band.
        self.wavelet_convs = nn.ModuleList(
            nn.Conv2d(
                4 * in_channels,
                4 * in_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=4 * in_channels,
                bias=False) for _ in range(wt_levels))
        self.wavelet_scale = nn.ModuleList(
            ChannelScale(4 * in_channels, 0.1) for _ in range(wt_levels))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'WTConv2d expects (N, {self.in_channels}, H, W) inputs, got '
                f'{tuple(x.shape)}')
        out = self.base_scale(self.base_conv(x))
        if self.wt_levels:
            out = out + self._wavelet_branch(x)
        if self.stride > 1:
            out = out[..., ::self.stride, ::self.stride]
        return out

    def _wavelet_branch(self, x: Tensor) -> Tensor:
        bands: List[Tensor] = []
        sizes: List[Tuple[int, int]] = []
        ll = x
        for conv, scale in zip(self.wavelet_convs, self.wavelet_scale):
            sizes.append(tuple(ll.shape[-2:]))
            ll, highs = haar_dwt(ll)
            n, c, h, w = ll.shape
            packed = torch.cat((ll.unsqueeze(2), highs), dim=2)
            packed = scale(conv(packed.view(n, 4 * c, h, w)))
            bands.append(packed.view(n, c, 4, h, w))
        # Coarsest level first: its reconstruction joins the next LL band.
        out = None
        for packed, size in zip(reversed(bands), reversed(sizes)):
            ll = packed[:, :, 0] if out is None else packed[:, :, 0] + out
            out = haar_idwt(ll, packed[:, :, 1:], output_size=size)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in _AUTHORS_FIXED_FILTERS:
            value = state_dict.pop(prefix + name, None)
            if value is not None and name != 'stride_filter' and not (
                    value.shape[-2:] == (2, 2)
                    and torch.allclose(value.abs(), torch.tensor(0.5))):
                raise ValueError(
                    f'{prefix}{name} in the checkpoint is not a Haar filter; '
                    'WTConv2d only supports the Haar (db1) wavelet')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, wt_levels={self.wt_levels}')
