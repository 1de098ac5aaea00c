# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One level of the 2D dual-tree complex wavelet transform (DTCWT), forward
and inverse, as pytorch_wavelets' ``DTCWTForward(J=1)`` and
``DTCWTInverse`` compute it (the transform SVT's authors use; the tests
compare the two), in plain PyTorch.

Why not pytorch_wavelets itself: it builds its symmetric-padding indices in
numpy on every call, which cannot be traced (mmengine's FLOP counter, ONNX
export, ``torch.compile``) and costs a host-to-device copy per filter on a
GPU. The filter coefficients are still pytorch_wavelets'; the gradients
(autograd's here, its hand-written backward there) agree too.

Level 1 filters the rows and then the columns of the input with the
biorthogonal low-pass ``h0`` and high-pass ``h1`` (half-sample symmetric
extension at the borders, no decimation), which gives the low-pass band at
full size; each of the three high-pass quadrants (LH, HL, HH) becomes two
complex bands at half size by combining the four pixels of each 2x2 quad
(``_quads_to_complex``): six oriented bands (15, 45, 75, 105, 135 and 165
degrees). The inverse applies the synthesis filters ``g0``/``g1`` the same
way and sums.

The transform runs in float32 (float64 for float64 inputs) with autocast
off: its perfect reconstruction needs the precision, and SVT's authors run
it in float32. Odd sizes are extended by their last row/column (as
pytorch_wavelets) and cropped back by :meth:`DTCWT.inverse`.
"""
import math
import warnings
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _load_biorthogonal(name: str) -> Tuple[Tensor, ...]:
    """pytorch_wavelets' level-1 filters ``(h0, g0, h1, g1)``, float32."""
    # its import of pkg_resources warns of a deprecation users cannot act on
    with warnings.catch_warnings():
        warnings.filterwarnings(
            'ignore', message='pkg_resources is deprecated')
        try:
            from pytorch_wavelets.dtcwt.coeffs import biort
        except ImportError as e:
            raise ImportError(
                'the DTCWT (SVT) takes its filters from pytorch_wavelets: pip '
                'install pytorch_wavelets PyWavelets "setuptools>=77,<81"'
            ) from e
    return tuple(
        torch.tensor(h, dtype=torch.float32).flatten() for h in biort(name))


def _symmetric_indices(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a length-``n`` axis extended by ``pad`` samples each side
    by half-sample symmetric reflection (``x[-1] = x[0]``), repeated as
    often as needed."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def _filter(x: Tensor, h: Tensor, dim: int) -> Tensor:
    """Each channel of ``x`` (N, C, H, W) convolved with the odd-length 1D
    filter ``h`` along ``dim`` (-2: columns, -1: rows), same size out."""
    pad = h.numel() // 2
    x = x.index_select(dim, _symmetric_indices(x.shape[dim], pad, x.device))
    shape = (1, 1, -1, 1) if dim == -2 else (1, 1, 1, -1)
    # conv2d correlates: flipped, it convolves (the filters are symmetric,
    # but this keeps the definition)
    weight = h.flip(0).view(shape).expand(x.shape[1], -1, -1, -1)
    return F.conv2d(x, weight, groups=x.shape[1])


def _quads_to_complex(y: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 2x2 quads ``[[a, b], [c, d]]`` of a high-pass quadrant as two
    complex bands at half size: ``(a - d) + i (b + c)`` and
    ``(a + d) + i (b - c)``, scaled by 1 / sqrt(2)."""
    y = y / math.sqrt(2)
    a, b = y[..., 0::2, 0::2], y[..., 0::2, 1::2]
    c, d = y[..., 1::2, 0::2], y[..., 1::2, 1::2]
    return a - d, b + c, a + d, b - c


def _complex_to_quads(real1: Tensor, imag1: Tensor, real2: Tensor,
                      imag2: Tensor) -> Tensor:
    """The inverse of :func:`_quads_to_complex`."""
    top = torch.stack([real1 + real2, imag1 + imag2], dim=-1)
    bottom = torch.stack([imag1 - imag2, real2 - real1], dim=-1)
    quads = torch.stack([top, bottom], dim=-3)  # (..., h, 2, w, 2)
    n, c, h, _, w, _ = quads.shape
    return quads.reshape(n, c, 2 * h, 2 * w) / math.sqrt(2)


# (quadrant, which of its two complex bands) for the six orientations in
# pytorch_wavelets' order: 15, 45, 75, 105, 135, 165 degrees
_ORIENTATIONS = (('lh', 0), ('hh', 0), ('hl', 0), ('hl', 1), ('hh', 1),
                 ('lh', 1))


class DTCWT(nn.Module):
    """Level-1 DTCWT with the given biorthogonal filters.

    Shapes, for an (N, C, H, W) input (H, W rounded up to even):
    ``forward`` returns the low-pass band (N, C, H, W) (level 1 does not
    decimate) and the six oriented complex high-pass bands
    (N, C, 6, H / 2, W / 2, 2), real and imaginary parts last, as
    pytorch_wavelets' ``DTCWTForward(J=1)``; :meth:`inverse` takes both back
    to (N, C, H, W). Gradients are autograd's.

    Args:
        biort (str): pytorch_wavelets' name of the level-1 filters.
            Default: 'near_sym_b'.
    """

    def __init__(self, biort: str = 'near_sym_b'):
        super().__init__()
        h0, g0, h1, g1 = _load_biorthogonal(biort)
        # fixed: they follow .to() but are not part of a state dict
        for name, h in (('h0', h0), ('h1', h1), ('g0', g0), ('g1', g1)):
            self.register_buffer(name, h, persistent=False)

    def _filters(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        """The filters in the dtype the transform runs in: float32, or
        float64 if the input or the module is."""
        dtype = torch.float32
        for t in (*tensors, self.h0):
            dtype = torch.promote_types(dtype, t.dtype)
        return tuple(h.to(dtype) for h in (self.h0, self.h1, self.g0, self.g1))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            h0, h1, _, _ = self._filters(x)
            x = x.to(h0.dtype)
            if x.shape[-2] % 2:
                x = torch.cat([x, x[..., -1:, :]], dim=-2)
            if x.shape[-1] % 2:
                x = torch.cat([x, x[..., -1:]], dim=-1)
            lo, hi = _filter(x, h0, -1), _filter(x, h1, -1)
            low = _filter(lo, h0, -2)
            quads = dict(
                lh=_quads_to_complex(_filter(lo, h1, -2)),
                hl=_quads_to_complex(_filter(hi, h0, -2)),
                hh=_quads_to_complex(_filter(hi, h1, -2)))
            highs = torch.stack([
                torch.stack([quads[q][2 * k], quads[q][2 * k + 1]], dim=-1)
                for q, k in _ORIENTATIONS
            ], dim=2)
        return low, highs

    def inverse(self, low: Tensor, highs: Tensor,
                size: Tuple[int, int]) -> Tensor:
        """The image of ``size`` (H, W) the bands came from, float32 (or
        float64)."""
        with torch.autocast(low.device.type, enabled=False):
            _, _, g0, g1 = self._filters(low, highs)
            low, highs = low.to(g0.dtype), highs.to(g0.dtype)
            bands = highs.unbind(2)  # six (N, C, h, w, 2)
            quads = {}
            for q in ('lh', 'hl', 'hh'):
                first, second = (bands[i] for i, (name, _) in enumerate(
                    _ORIENTATIONS) if name == q)
                quads[q] = _complex_to_quads(*first.unbind(-1),
                                             *second.unbind(-1))
            hi = _filter(quads['hh'], g1, -2) + _filter(quads['hl'], g0, -2)
            lo = _filter(quads['lh'], g1, -2) + _filter(low, g0, -2)
            x = _filter(hi, g1, -1) + _filter(lo, g0, -1)
        return x[..., :size[0], :size[1]]
