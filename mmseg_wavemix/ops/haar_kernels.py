# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""How one Haar level is computed: the device-specific part of
:mod:`.haar`.

On CUDA, where Triton is installed, one fused kernel each way
(:mod:`.haar_triton`). Elsewhere two memory-bound passes of contiguous-row
arithmetic (no 2x2 gathers): on CPU the rows are processed in chunks that
keep the temporaries in cache; on other devices in one piece, since each
chunk is a few kernel launches and small chunks leave a GPU idle. In a
graph being compiled, exported or traced (``torch.compile``,
``torch.export``, ``torch.jit.trace``) the same arithmetic out of place, in
one piece, for the compiler to fuse.
"""
from typing import Tuple, Union

import torch
from torch import Tensor

from . import haar_triton

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


def _in_graph() -> bool:
    """Whether the ops are being recorded into a graph (``torch.compile``,
    ``torch.export``, a ``torch.jit`` trace for FLOP counters and ONNX):
    then a level is the out-of-place arithmetic, which every graph can hold
    (a trace would not record a Triton kernel)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _band_rows_per_chunk(bands: Tensor) -> int:
    """Rows of the half-size ``bands`` (an LL band, or one of its shape) to
    transform per chunk: on CPU about ``_CHUNK_NUMEL`` full-size elements
    (each band row spans 4x its elements at full size), elsewhere all."""
    if bands.device.type != 'cpu':
        return max(1, bands.shape[-2])
    band_row_numel = bands.numel() // max(1, bands.shape[-2])
    return max(1, _CHUNK_NUMEL // max(1, 4 * band_row_numel))


def _row_pair_terms(x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The half-sums and half-differences of each row pair of ``x`` (even
    height and width), split into even and odd columns:
    ``(sum_even, sum_odd, diff_even, diff_odd)``; LL = s_even + s_odd,
    LH = d_even + d_odd, HL = s_even - s_odd, HH = d_even - d_odd."""
    h, w = x.shape[-2:]
    rows = x.unflatten(-2, (h // 2, 2))
    top, bottom = rows[..., 0, :], rows[..., 1, :]
    half_sum = torch.lerp(top, bottom, 0.5)
    half_diff = top - half_sum
    sum_even, sum_odd = half_sum.unflatten(-1, (w // 2, 2)).unbind(-1)
    diff_even, diff_odd = half_diff.unflatten(-1, (w // 2, 2)).unbind(-1)
    return sum_even, sum_odd, diff_even, diff_odd


def _analysis_rows(x: Tensor, ll: Tensor, highs: Tensor) -> None:
    """One Haar level of the rows ``x`` (even height and width) into ``ll``
    and ``highs``.

    Two memory-bound passes of contiguous-row arithmetic instead of 2x2
    gathers: the half-sum and half-difference of each row pair
    (``s = (top + bottom) / 2`` as a lerp, ``d = top - s``), then the sum and
    difference of each column pair of ``s`` and ``d``, written straight into
    the outputs.
    """
    sum_even, sum_odd, diff_even, diff_odd = _row_pair_terms(x)
    torch.add(sum_even, sum_odd, out=ll)
    torch.add(diff_even, diff_odd, out=highs[..., 0, :, :])
    torch.sub(sum_even, sum_odd, out=highs[..., 1, :, :])
    torch.sub(diff_even, diff_odd, out=highs[..., 2, :, :])


def _analysis_graph(x: Tensor,
                    packed: bool) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """:func:`analysis` as out-of-place ops, for compiled and exported graphs
    (Dynamo breaks the graph at ``out=`` views; Inductor fuses these)."""
    sum_even, sum_odd, diff_even, diff_odd = _row_pair_terms(x)
    ll = sum_even + sum_odd
    highs = torch.stack(
        [diff_even + diff_odd, sum_even - sum_odd, diff_even - diff_odd],
        dim=-3)
    if packed:
        return torch.cat([ll, highs.flatten(1, 2)], dim=1)
    return ll, highs


def analysis(x: Tensor,
             packed: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """One Haar level of an input with even height and width (any memory
    layout). Returns ``(ll, highs)``, or the packed level (see
    :func:`_empty_bands`) if ``packed``."""
    if _in_graph():
        return _analysis_graph(x, packed)
    h, w = x.shape[-2:]
    ll, highs, out = _empty_bands(x, h // 2, w // 2, packed)
    if haar_triton.applies(x):
        haar_triton.analysis(x, ll, highs)
        return out if packed else (ll, highs)
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


def _synthesis_graph(ll: Tensor, highs: Tensor) -> Tensor:
    """:func:`synthesis` as out-of-place ops (see :func:`_analysis_graph`)."""
    lh, hl, hh = highs.unbind(dim=-3)
    even = torch.lerp(ll, hl, 0.5)
    half_sum = torch.stack([even, ll - even], dim=-1).flatten(-2)
    even = torch.lerp(lh, hh, 0.5)
    half_diff = torch.stack([even, lh - even], dim=-1).flatten(-2)
    return torch.stack([half_sum + half_diff, half_sum - half_diff],
                       dim=-2).flatten(-3, -2)


def synthesis(ll: Tensor, highs: Tensor) -> Tensor:
    """Inverse of :func:`analysis` (output of even size 2h x 2w, in the
    memory format of ``ll``)."""
    if _in_graph():
        return _synthesis_graph(ll, highs)
    h, w = ll.shape[-2:]
    x = torch.empty((*ll.shape[:-2], 2 * h, 2 * w),
                    dtype=ll.dtype,
                    device=ll.device,
                    memory_format=torch.channels_last
                    if _prefers_channels_last(ll) else torch.contiguous_format)
    if haar_triton.applies(ll):
        haar_triton.synthesis(ll, highs, x)
        return x
    step = _band_rows_per_chunk(ll)
    for r in range(0, h, step):
        _synthesis_rows(ll[..., r:r + step, :], highs[..., r:r + step, :],
                        x[..., 2 * r:2 * (r + step), :])
    return x
