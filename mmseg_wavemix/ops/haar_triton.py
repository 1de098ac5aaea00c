# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One Haar level as a single Triton kernel each way, for GPUs.

Each program takes a tile of 2x2 blocks and writes their four bands at once
(analysis), or the reverse (synthesis), computing in float32 whatever the
storage dtype: one read and one write of the data, no temporaries. Any
strides work, so the same kernels write the packed level a WaveMix block
uses (LL in channels ``[0, C)``, band b of channel c at ``C + 3c + b``) or
separate ``ll`` / ``highs`` tensors, in NCHW or channels_last.

A tile spans rows of half-size positions by a run of the layout's fastest
dimension (the half width in NCHW, the channels in channels_last), whose
index is a plain range: the compiler can then prove the accesses contiguous
and issue vector loads and stores. In NCHW the two pixels of each column
pair are loaded as one contiguous run and split in registers, not as two
loads at stride 2 (for 16-bit types each of those would be a scalar access).
In channels_last, where band b of channel c is at ``3c + b`` (packed levels
and :func:`~mmseg_wavemix.ops.haar_kernels._empty_bands`' ``highs``), the
three bands of a run of channels are one contiguous run too, interleaved
and split in registers by ``tl.gather``.

Without a GPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``), which the tests use.
"""
from torch import Tensor

from . import triton_support
from .triton_support import tl, triton

# Half-size positions per program, and the most of them along the fastest
# dimension.
BLOCK = 1024
MAX_INNER_BLOCK = 128
# tl.gather (Triton >= 3.2) interleaves the bands in channels_last; without
# it they are stored at a stride of 3
_GATHER = triton is not None and hasattr(tl, 'gather')


if triton is not None:

    @triton.jit
    def _split_pairs(t, BR: tl.constexpr, BI: tl.constexpr):
        """The even and odd columns of a (BR, 2 BI) tile."""
        return tl.split(tl.reshape(t, (BR, BI, 2)))

    @triton.jit
    def _join_pairs(even, odd, BR: tl.constexpr, BI: tl.constexpr):
        """Inverse of :func:`_split_pairs`."""
        return tl.reshape(tl.join(even, odd), (BR, 2 * BI))

    @triton.jit
    def _interleave_bands(lh, hl, hh, BR: tl.constexpr, BI: tl.constexpr):
        """(BR, 4 BI): for each channel c its three bands at 3c, 3c + 1 and
        3c + 2 (the last BI entries unused), as one contiguous run."""
        unused = tl.full((BR, BI), 0, lh.dtype)
        # joined innermost first: band b of c at 4c + b
        spread = tl.reshape(
            tl.join(tl.join(lh, hh), tl.join(hl, unused)), (BR, 4 * BI))
        m = tl.arange(0, 4 * BI)
        at = tl.where(m < 3 * BI, 4 * (m // 3) + m % 3, 0)
        return tl.gather(spread, tl.broadcast_to(at[None, :], (BR, 4 * BI)),
                         1)

    @triton.jit
    def _band_of_run(run, band: tl.constexpr, BR: tl.constexpr,
                     BI: tl.constexpr):
        """Band ``band`` (BR, BI) of a run from :func:`_interleave_bands`."""
        at = 3 * tl.arange(0, BI) + band
        return tl.gather(run, tl.broadcast_to(at[None, :], (BR, BI)), 1)

    @triton.jit
    def _haar_kernel(x_ptr, ll_ptr, hi_ptr, rows, inner, channels, height,
                     width, xs0, xs1, xs2, xs3, ls0, ls1, ls2, ls3, hs0, hs1,
                     hs2, hs3, hs4, SYNTHESIS: tl.constexpr,
                     CHANNELS_LAST: tl.constexpr,
                     BANDS_INTERLEAVED: tl.constexpr, BR: tl.constexpr,
                     BI: tl.constexpr):
        """One level over the N*C*h*w half-size positions as a (rows, inner)
        grid, inner the fastest dimension: (N*C*h, w) in NCHW, (N*h*w, C) in
        channels_last. Analysis reads ``x`` and writes ``ll``/``hi``,
        synthesis the reverse. ``height``/``width`` are the half sizes."""
        r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
        k = tl.program_id(1) * BI + tl.arange(0, BI)
        row_ok = r < rows
        mask = row_ok[:, None] & (k < inner)[None, :]
        if CHANNELS_LAST:
            j = r % width
            rest = r // width
            i = rest % height
            n = rest // height
            x_row = n * xs0 + 2 * i * xs2 + 2 * j * xs3
            ll_at = ll_ptr + (n * ls0 + i * ls2 + j * ls3)[:, None] + (
                k * ls1)[None, :]
            hi_at = hi_ptr + (n * hs0 + i * hs3 + j * hs4)[:, None] + (
                k * hs1)[None, :]
            # top-left pixel of each block; the others at +xs3, +xs2
            left = x_ptr + x_row[:, None] + (k * xs1)[None, :]
            if BANDS_INTERLEAVED:  # band b of channel c at 3c + b: one run
                run = tl.arange(0, 4 * BI)
                run_at = hi_ptr + (n * hs0 + i * hs3 + j * hs4)[:, None] + (
                    3 * tl.program_id(1) * BI + run)[None, :]
                run_mask = row_ok[:, None] & (
                    (run < 3 * BI) &
                    (run < 3 * (inner - tl.program_id(1) * BI)))[None, :]
        else:
            i = r % height
            rest = r // height
            c = rest % channels
            n = rest // channels
            x_row = n * xs0 + c * xs1 + 2 * i * xs2
            ll_at = ll_ptr + (n * ls0 + c * ls1 + i * ls2)[:, None] + (
                k * ls3)[None, :]
            hi_at = hi_ptr + (n * hs0 + c * hs1 + i * hs3)[:, None] + (
                k * hs4)[None, :]
            # both pixels of each column pair of the top row; bottom at +xs2
            cols = tl.program_id(1) * 2 * BI + tl.arange(0, 2 * BI)
            pairs = x_ptr + x_row[:, None] + (cols * xs3)[None, :]
            pair_mask = row_ok[:, None] & (cols < 2 * inner)[None, :]
        if SYNTHESIS:
            s = tl.load(ll_at, mask=mask).to(tl.float32)
            if CHANNELS_LAST and BANDS_INTERLEAVED:
                bands = tl.load(run_at, mask=run_mask, other=0.)
                lh = _band_of_run(bands, 0, BR, BI).to(tl.float32)
                hl = _band_of_run(bands, 1, BR, BI).to(tl.float32)
                hh = _band_of_run(bands, 2, BR, BI).to(tl.float32)
            else:
                lh = tl.load(hi_at, mask=mask).to(tl.float32)
                hl = tl.load(hi_at + hs2, mask=mask).to(tl.float32)
                hh = tl.load(hi_at + 2 * hs2, mask=mask).to(tl.float32)
            # the 2x2 analysis matrix is symmetric and orthogonal: its own
            # inverse
            p, q = s + lh, s - lh
            r_, t = hl + hh, hl - hh
            dtype = x_ptr.dtype.element_ty
            a = ((p + r_) * 0.5).to(dtype)
            b = ((p - r_) * 0.5).to(dtype)
            c_ = ((q + t) * 0.5).to(dtype)
            d = ((q - t) * 0.5).to(dtype)
            if CHANNELS_LAST:
                tl.store(left, a, mask=mask)
                tl.store(left + xs3, b, mask=mask)
                tl.store(left + xs2, c_, mask=mask)
                tl.store(left + xs2 + xs3, d, mask=mask)
            else:
                tl.store(pairs, _join_pairs(a, b, BR, BI), mask=pair_mask)
                tl.store(pairs + xs2, _join_pairs(c_, d, BR, BI),
                         mask=pair_mask)
        else:
            if CHANNELS_LAST:
                a = tl.load(left, mask=mask)
                b = tl.load(left + xs3, mask=mask)
                c_ = tl.load(left + xs2, mask=mask)
                d = tl.load(left + xs2 + xs3, mask=mask)
            else:
                a, b = _split_pairs(
                    tl.load(pairs, mask=pair_mask), BR, BI)
                c_, d = _split_pairs(
                    tl.load(pairs + xs2, mask=pair_mask), BR, BI)
            a, b = a.to(tl.float32), b.to(tl.float32)
            c_, d = c_.to(tl.float32), d.to(tl.float32)
            top_sum, top_diff = a + b, a - b
            bottom_sum, bottom_diff = c_ + d, c_ - d
            dtype = ll_ptr.dtype.element_ty
            tl.store(ll_at, ((top_sum + bottom_sum) * 0.5).to(dtype),
                     mask=mask)
            lh = ((top_sum - bottom_sum) * 0.5).to(dtype)
            hl = ((top_diff + bottom_diff) * 0.5).to(dtype)
            hh = ((top_diff - bottom_diff) * 0.5).to(dtype)
            if CHANNELS_LAST and BANDS_INTERLEAVED:
                tl.store(run_at, _interleave_bands(lh, hl, hh, BR, BI),
                         mask=run_mask)
            else:
                tl.store(hi_at, lh, mask=mask)
                tl.store(hi_at + hs2, hl, mask=mask)
                tl.store(hi_at + 2 * hs2, hh, mask=mask)


def tile(rows: int, inner: int):
    """The (rows, inner) tile of a program: ``BLOCK`` positions, up to
    ``MAX_INNER_BLOCK`` of them along the fastest dimension."""
    bi = min(MAX_INNER_BLOCK, triton.next_power_of_2(max(inner, 1)))
    return BLOCK // bi, bi


def _launch(x: Tensor, ll: Tensor, highs: Tensor, synthesis: bool) -> None:
    n, c, h, w = ll.shape
    if n * c * h * w == 0:
        return
    channels_last = c > 1 and ll.stride(1) < ll.stride(3)
    rows, inner = (n * h * w, c) if channels_last else (n * c * h, w)
    br, bi = tile(rows, inner)
    _haar_kernel[(triton.cdiv(rows, br), triton.cdiv(inner, bi))](
        x, ll, highs, rows, inner, c, h, w, *x.stride(), *ll.stride(),
        *highs.stride(), SYNTHESIS=synthesis, CHANNELS_LAST=channels_last,
        BANDS_INTERLEAVED=_GATHER and highs.stride(1) == 3 and
        highs.stride(2) == 1,
        BR=br, BI=bi)


def analysis(x: Tensor, ll: Tensor, highs: Tensor) -> None:
    """One level of ``x`` (N, C, H, W), even H and W, into ``ll`` (N, C,
    H/2, W/2) and ``highs`` (N, C, 3, H/2, W/2), any strides."""
    _launch(x, ll, highs, synthesis=False)


def synthesis(ll: Tensor, highs: Tensor, x: Tensor) -> None:
    """Inverse of :func:`analysis`: ``ll`` and ``highs`` into ``x``."""
    _launch(x, ll, highs, synthesis=True)


def applies(x: Tensor) -> bool:
    """Whether the Triton kernels serve ``x``: a 4D tensor on a CUDA device,
    where a Triton that compiles them is installed
    (:func:`~.triton_support.serves`)."""
    return x.dim() == 4 and triton_support.serves(x)
