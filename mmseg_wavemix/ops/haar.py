# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The 2D Haar wavelet transform in plain PyTorch: conventions, autograd
and checks here; how a level is computed on each device in
:mod:`.haar_kernels`.

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
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .haar_kernels import analysis, synthesis

DWT_BACKENDS = ('native', 'pytorch_wavelets')


def _pad_to_even(x: Tensor) -> Tensor:
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


class _HaarDWTFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, packed: bool = False):
        ctx.input_size = x.shape[-2:]
        ctx.packed = packed
        return analysis(_pad_to_even(x), packed)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        if ctx.packed:
            grad = grads[0]
            c = grad.shape[1] // 4
            grads = grad[:, :c], grad[:, c:].unflatten(1, (c, 3))
        # Through the other Function (not synthesis directly), so that
        # double backward works: the out= kernels are not differentiable.
        h, w = ctx.input_size
        return _HaarIDWTFunction.apply(*grads)[..., :h, :w], None


class _HaarIDWTFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, ll: Tensor, highs: Tensor) -> Tensor:
        return synthesis(ll, highs)

    @staticmethod
    def backward(ctx, grad_x: Tensor) -> Tuple[Tensor, Tensor]:
        return _HaarDWTFunction.apply(grad_x)


def _check_input(x: Tensor, name: str = 'x') -> None:
    if x.dim() < 2:
        raise ValueError(f'{name} must have at least 2 dimensions '
                         f'(..., H, W), got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor, got '
                        f'{x.dtype}; convert it with {name}.float()')


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
        names = ('h0_col', 'h1_col', 'h0_row', 'h1_row')
        for name, filt in zip(names, filters):
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
