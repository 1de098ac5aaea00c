# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Multi-level 2D Haar wavelet transform in plain PyTorch.

Sub-band conventions follow pytorch_wavelets ``DWTForward(J, wave='haar',
mode='zero')`` exactly, so results can be compared (and weights trained with
it reused). For a 2x2 block ``[[a, b], [c, d]]`` (``a = x[0::2, 0::2]``,
``b = x[0::2, 1::2]``, ``c = x[1::2, 0::2]``, ``d = x[1::2, 1::2]``)::

    LL = (a + b + c + d) / 2
    LH = (a + b - c - d) / 2    # highs[:, :, 0]
    HL = (a - b + c - d) / 2    # highs[:, :, 1]
    HH = (a - b - c + d) / 2    # highs[:, :, 2]

Odd heights/widths are zero-padded at the bottom/right before the transform,
so each level halves a size ``n`` to ``ceil(n / 2)``.

The 2x2 analysis matrix is symmetric and orthogonal, so the inverse transform
is also the exact adjoint: the backward pass of the DWT is the IDWT of the
incoming gradients (and vice versa), which is cheaper than autograd through
strided slices. Results equal the textbook formulas up to float rounding
(the halving is folded into a lerp).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

DWT_BACKENDS = ('native', 'pytorch_wavelets')


def _pad_to_even(x: Tensor) -> Tensor:
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


# Rows are transformed in chunks of about this many input elements: the
# temporaries (4 MB in fp32) then stay in cache and are recycled by the
# allocator, where whole-size ones would page-fault fresh memory each call.
_CHUNK_NUMEL = 1 << 20


def _prefers_channels_last(x: Tensor) -> bool:
    """Whether a 4D tensor is laid out channels last (channels the fastest
    dimension), also for views such as the first channels of a packed
    level, which are not channels_last contiguous."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1


def _empty_bands(x: Tensor, h: int, w: int,
                 packed: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """Uninitialised outputs of one level of ``x`` at size (h, w), in the
    memory layout of ``x``: ``ll`` (..., h, w) and ``highs`` (..., 3, h, w),
    and the tensor that holds them (``packed``: (N, 4C, h, w) with LL in
    channels [0, C) and band b of channel c in C + 3c + b; else ``highs``).

    For channels last the band is the fastest dimension of ``highs``, so that
    ``highs.flatten(1, 2)`` (channel ``3 * c + band``) is channels last too
    and the next 1x1 convolution needs no copy.
    """
    channels_last = _prefers_channels_last(x)
    if packed:
        n, c = x.shape[:2]
        out = torch.empty((n, 4 * c, h, w),
                          dtype=x.dtype,
                          device=x.device,
                          memory_format=torch.channels_last
                          if channels_last else torch.contiguous_format)
        return out[:, :c], out[:, c:].unflatten(1, (c, 3)), out
    if channels_last:
        n, c = x.shape[:2]
        ll = torch.empty((n, c, h, w),
                         dtype=x.dtype,
                         device=x.device,
                         memory_format=torch.channels_last)
        highs = x.new_empty(n, h, w, c, 3).permute(0, 3, 4, 1, 2)
        return ll, highs, highs
    highs = x.new_empty(*x.shape[:-2], 3, h, w)
    return x.new_empty(*x.shape[:-2], h, w), highs, highs


def _band_rows_per_chunk(bands: Tensor) -> int:
    """Rows of the half-size ``bands`` (an LL band, or one of its shape) to
    transform per chunk of about ``_CHUNK_NUMEL`` full-size elements: each
    band row spans 4x its elements at full size."""
    band_row_numel = bands.numel() // max(1, bands.shape[-2])
    return max(1, _CHUNK_NUMEL // max(1, 4 * band_row_numel))


def _analysis_rows(x: Tensor, ll: Tensor, highs: Tensor) -> None:
    """One Haar level of the rows ``x`` (even height and width) into ``ll``
    and ``highs``.

    Two memory-bound passes of contiguous-row arithmetic instead of 2x2
    gathers: the half-sum and half-difference of each row pair
    (``s = (top + bottom) / 2`` as a lerp, ``d = top - s``), then the sum and
    difference of each column pair of ``s`` and ``d``, written straight into
    the outputs: LL = s_even + s_odd, HL = s_even - s_odd, LH = d_even + d_odd,
    HH = d_even - d_odd.
    """
    h, w = x.shape[-2:]
    rows = x.unflatten(-2, (h // 2, 2))
    top, bottom = rows[..., 0, :], rows[..., 1, :]
    half_sum = torch.lerp(top, bottom, 0.5)
    half_diff = top - half_sum
    sum_even, sum_odd = half_sum.unflatten(-1, (w // 2, 2)).unbind(-1)
    diff_even, diff_odd = half_diff.unflatten(-1, (w // 2, 2)).unbind(-1)
    torch.add(sum_even, sum_odd, out=ll)
    torch.add(diff_even, diff_odd, out=highs[..., 0, :, :])
    torch.sub(sum_even, sum_odd, out=highs[..., 1, :, :])
    torch.sub(diff_even, diff_odd, out=highs[..., 2, :, :])


def _analysis(x: Tensor,
              packed: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """One Haar level of an input with even height and width, in chunks of
    rows (any memory layout). Returns ``(ll, highs)``, or the packed level
    (see :func:`_empty_bands`) if ``packed``."""
    h, w = x.shape[-2:]
    ll, highs, out = _empty_bands(x, h // 2, w // 2, packed)
    step = _band_rows_per_chunk(ll)
    for r in range(0, h // 2, step):
        _analysis_rows(x[..., 2 * r:2 * (r + step), :],
                       ll[..., r:r + step, :], highs[..., r:r + step, :])
    return out if packed else (ll, highs)


def _synthesis_rows(ll: Tensor, highs: Tensor, x: Tensor) -> None:
    """Inverse of :func:`_analysis_rows`: the same two passes backwards."""
    lh, hl, hh = highs.unbind(dim=-3)
    h, w = ll.shape[-2:]
    lead = ll.shape[:-2]
    half_sum = ll.new_empty(*lead, h, w, 2)
    half_diff = ll.new_empty(*lead, h, w, 2)
    torch.lerp(ll, hl, 0.5, out=half_sum[..., 0])
    torch.sub(ll, half_sum[..., 0], out=half_sum[..., 1])
    torch.lerp(lh, hh, 0.5, out=half_diff[..., 0])
    torch.sub(lh, half_diff[..., 0], out=half_diff[..., 1])
    half_sum, half_diff = half_sum.flatten(-2), half_diff.flatten(-2)
    rows = x.unflatten(-2, (h, 2))
    torch.add(half_sum, half_diff, out=rows[..., 0, :])
    torch.sub(half_sum, half_diff, out=rows[..., 1, :])


def _synthesis(ll: Tensor, highs: Tensor) -> Tensor:
    """Inverse of :func:`_analysis` (output of even size 2h x 2w, in the
    memory format of ``ll``)."""
    h, w = ll.shape[-2:]
    x = torch.empty((*ll.shape[:-2], 2 * h, 2 * w),
                    dtype=ll.dtype,
                    device=ll.device,
                    memory_format=torch.channels_last
                    if _prefers_channels_last(ll) else torch.contiguous_format)
    step = _band_rows_per_chunk(ll)
    for r in range(0, h, step):
        _synthesis_rows(ll[..., r:r + step, :], highs[..., r:r + step, :],
                        x[..., 2 * r:2 * (r + step), :])
    return x


class _HaarDWTFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, packed: bool = False):
        ctx.input_size = x.shape[-2:]
        ctx.packed = packed
        return _analysis(_pad_to_even(x), packed)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        if ctx.packed:
            grad = grads[0]
            c = grad.shape[1] // 4
            grads = grad[:, :c], grad[:, c:].unflatten(1, (c, 3))
        # Through the other Function (not _synthesis directly), so that
        # double backward works: the out= kernels are not differentiable.
        h, w = ctx.input_size
        return _HaarIDWTFunction.apply(*grads)[..., :h, :w], None


class _HaarIDWTFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, ll: Tensor, highs: Tensor) -> Tensor:
        return _synthesis(ll, highs)

    @staticmethod
    def backward(ctx, grad_x: Tensor) -> Tuple[Tensor, Tensor]:
        return _HaarDWTFunction.apply(grad_x)


def _check_input(x: Tensor, name: str = 'x') -> None:
    if x.dim() < 2:
        raise ValueError(f'{name} must have at least 2 dimensions (..., H, W), '
                         f'got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor, got {x.dtype}; '
                        f'convert it with {name}.float()')


def haar_dwt(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Single-level 2D Haar DWT over the last two dimensions.

    Args:
        x (Tensor): Input of shape (..., H, W), any floating dtype.

    Returns:
        tuple[Tensor, Tensor]: ``ll`` of shape (..., ceil(H/2), ceil(W/2)) and
        ``highs`` of shape (..., 3, ceil(H/2), ceil(W/2)) holding LH, HL, HH.
    """
    _check_input(x)
    return _HaarDWTFunction.apply(x)


def haar_dwt_packed(x: Tensor) -> Tensor:
    """Single-level 2D Haar DWT of a batch of images, packed in channels.

    The output is ``torch.cat((ll, highs.flatten(1, 2)), dim=1)`` of
    :func:`haar_dwt`, the layout a WaveMix block feeds to its MLPs, written
    in place (no concatenation) and in the memory layout of ``x``: channels
    ``[0, C)`` hold LL, channel ``C + 3 * c + b`` holds band b (LH, HL, HH)
    of input channel c.

    Args:
        x (Tensor): Input of shape (N, C, H, W), any floating dtype.

    Returns:
        Tensor: Shape (N, 4C, ceil(H/2), ceil(W/2)).
    """
    _check_input(x)
    if x.dim() != 4:
        raise ValueError('haar_dwt_packed expects (N, C, H, W), got shape '
                         f'{tuple(x.shape)}; use haar_dwt for other shapes')
    return _HaarDWTFunction.apply(x, True)


def haar_lowpass(x: Tensor) -> Tensor:
    """Mean-normalised Haar low-pass band, ``LL / 2``: the mean of each 2x2
    block (odd sizes zero-padded at the bottom/right, as :func:`haar_dwt`).

    A parameter-free 2x downsampling, cheaper than the full transform.

    Args:
        x (Tensor): Input of shape (..., H, W).

    Returns:
        Tensor: Shape (..., ceil(H/2), ceil(W/2)).
    """
    _check_input(x)
    x = _pad_to_even(x)
    h, w = x.shape[-2:]
    return x.unflatten(-1, (w // 2, 2)).unflatten(-3, (h // 2, 2)).mean(
        dim=(-3, -1))


def haar_idwt(ll: Tensor,
              highs: Tensor,
              output_size: Optional[Sequence[int]] = None) -> Tensor:
    """Single-level inverse of :func:`haar_dwt`.

    Args:
        ll (Tensor): Low-pass band of shape (..., h, w).
        highs (Tensor): LH, HL, HH bands of shape (..., 3, h, w).
        output_size (Sequence[int], optional): (H, W) to crop the (2h, 2w)
            reconstruction to, e.g. the odd size of the original input.
            Default: None (no crop).

    Returns:
        Tensor: Reconstruction of shape (..., 2h, 2w) or ``output_size``.
    """
    _check_input(ll, 'll')
    if highs.shape[:-3] != ll.shape[:-2] or highs.shape[-3] != 3 or \
            highs.shape[-2:] != ll.shape[-2:]:
        raise ValueError('highs must have shape (..., 3, h, w) matching ll '
                         f'(..., h, w); got ll {tuple(ll.shape)} and highs '
                         f'{tuple(highs.shape)}')
    x = _HaarIDWTFunction.apply(ll, highs)
    if output_size is not None:
        h, w = output_size
        if h > x.shape[-2] or w > x.shape[-1] or h < x.shape[-2] - 1 or \
                w < x.shape[-1] - 1:
            raise ValueError(f'output_size {tuple(output_size)} does not fit '
                             f'a reconstruction of size {tuple(x.shape[-2:])}')
        x = x[..., :h, :w]
    return x


def haar_wavedec2(x: Tensor, levels: int) -> Tuple[Tensor, List[Tensor]]:
    """Multi-level 2D Haar DWT, cascaded on the low-pass band.

    Same output layout as pytorch_wavelets ``DWTForward(J=levels,
    wave='haar', mode='zero')``: the coarsest ``ll`` and the list of ``highs``
    from the finest (level 1) to the coarsest.

    Args:
        x (Tensor): Input of shape (N, C, H, W) (any leading dims work).
        levels (int): Number of levels (>= 1).

    Returns:
        tuple[Tensor, list[Tensor]]: ``(ll, [highs_1, ..., highs_levels])``.
    """
    if levels < 1:
        raise ValueError(f'levels must be >= 1, got {levels}')
    highs = []
    ll = x
    for _ in range(levels):
        ll, level_highs = haar_dwt(ll)
        highs.append(level_highs)
    return ll, highs


def haar_waverec2(ll: Tensor, highs: Sequence[Tensor]) -> Tensor:
    """Inverse of :func:`haar_wavedec2` (no crop of odd sizes).

    Each level's reconstruction is cropped to the size of the next finer
    ``highs`` band, which undoes the zero padding of odd intermediate sizes.
    """
    x = ll
    for level_highs in reversed(highs):
        h, w = level_highs.shape[-2:]
        x = haar_idwt(x[..., :h, :w], level_highs)
    return x


class PytorchWaveletsHaarDWT(torch.nn.Module):
    """Single-level Haar DWT computed by pytorch_wavelets (for cross-checks).

    Equivalent to :func:`haar_dwt`, but slower. Its filters are non-persistent
    buffers, so state dicts do not depend on the backend.
    """

    def __init__(self):
        super().__init__()
        try:
            import pywt
            from pytorch_wavelets.dwt.lowlevel import (AFB2D, mode_to_int,
                                                       prep_filt_afb2d)
        except ImportError as e:
            raise ImportError(
                "dwt_backend='pytorch_wavelets' needs pytorch_wavelets and "
                'PyWavelets: pip install pytorch_wavelets PyWavelets') from e
        self._afb2d = AFB2D
        self._mode = mode_to_int('zero')
        wavelet = pywt.Wavelet('haar')
        filters = prep_filt_afb2d(wavelet.dec_lo, wavelet.dec_hi, device='cpu')
        for name, filt in zip(('h0_col', 'h1_col', 'h0_row', 'h1_row'), filters):
            self.register_buffer(name, filt, persistent=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        filters = [f.to(x.dtype) for f in (self.h0_col, self.h1_col,
                                           self.h0_row, self.h1_row)]
        return self._afb2d.apply(x, *filters, self._mode)


class HaarDWT(torch.nn.Module):
    """Single-level Haar DWT as a module, with a choice of implementation.

    Args:
        backend (str): ``'native'`` (this package's exact, fast transform) or
            ``'pytorch_wavelets'`` (reference implementation, for
            cross-checks). Default: 'native'.
        packed (bool): Return one (N, 4C, H/2, W/2) tensor, LL then the
            detail bands interleaved per channel (see
            :func:`haar_dwt_packed`), instead of ``(ll, highs)``.
            Default: False.
    """

    def __init__(self, backend: str = 'native', packed: bool = False):
        super().__init__()
        if backend not in DWT_BACKENDS:
            raise ValueError(f'dwt_backend must be one of {DWT_BACKENDS}, got '
                             f'{backend!r}')
        self.backend = backend
        self.packed = packed
        self.reference = PytorchWaveletsHaarDWT() \
            if backend == 'pytorch_wavelets' else None

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if self.reference is None:
            return haar_dwt_packed(x) if self.packed else haar_dwt(x)
        ll, highs = self.reference(x)
        if self.packed:
            return torch.cat((ll, highs.flatten(1, 2)), dim=1)
        return ll, highs

    def extra_repr(self) -> str:
        return f'backend={self.backend!r}, packed={self.packed}'
