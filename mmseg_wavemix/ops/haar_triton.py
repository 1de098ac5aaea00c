# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One Haar level as a single Triton kernel each way, for GPUs.

Each program reads whole 2x2 blocks and writes the four bands of a block at
once (analysis), or the reverse (synthesis), computing in float32 whatever
the storage dtype: one read and one write of the data, no temporaries. Any
strides work, so the same kernels write the packed level a WaveMix block
uses (LL in channels ``[0, C)``, band b of channel c at ``C + 3c + b``) or
separate ``ll`` / ``highs`` tensors, in NCHW or channels_last. Programs walk
the output in its memory order, so loads and stores stay coalesced.

Without a GPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``), which the tests use.
"""
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: the plain PyTorch kernels are used
    triton = None

BLOCK = 1024


def available() -> bool:
    """Whether Triton can be imported here."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _haar_kernel(x_ptr, ll_ptr, hi_ptr, total, channels, height, width,
                     xs0, xs1, xs2, xs3, ls0, ls1, ls2, ls3, hs0, hs1, hs2,
                     hs3, hs4, SYNTHESIS: tl.constexpr,
                     CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        """One level over the ``total`` = N*C*h*w half-size positions:
        analysis reads ``x`` and writes ``ll``/``hi``, synthesis the
        reverse. ``height``/``width`` are the half sizes."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = idx < total
        if CHANNELS_LAST:  # channels fastest, as the tensors are laid out
            c = idx % channels
            rest = idx // channels
            j = rest % width
            rest = rest // width
            i = rest % height
            n = rest // height
        else:
            j = idx % width
            rest = idx // width
            i = rest % height
            rest = rest // height
            c = rest % channels
            n = rest // channels
        top_left = x_ptr + n * xs0 + c * xs1 + 2 * i * xs2 + 2 * j * xs3
        ll_at = ll_ptr + n * ls0 + c * ls1 + i * ls2 + j * ls3
        hi_at = hi_ptr + n * hs0 + c * hs1 + i * hs3 + j * hs4
        if SYNTHESIS:
            s = tl.load(ll_at, mask=mask).to(tl.float32)
            lh = tl.load(hi_at, mask=mask).to(tl.float32)
            hl = tl.load(hi_at + hs2, mask=mask).to(tl.float32)
            hh = tl.load(hi_at + 2 * hs2, mask=mask).to(tl.float32)
            # the 2x2 analysis matrix is symmetric and orthogonal: its own
            # inverse
            p, q = s + lh, s - lh
            r, t = hl + hh, hl - hh
            dtype = x_ptr.dtype.element_ty
            tl.store(top_left, ((p + r) * 0.5).to(dtype), mask=mask)
            tl.store(top_left + xs3, ((p - r) * 0.5).to(dtype), mask=mask)
            tl.store(top_left + xs2, ((q + t) * 0.5).to(dtype), mask=mask)
            tl.store(top_left + xs2 + xs3, ((q - t) * 0.5).to(dtype),
                     mask=mask)
        else:
            a = tl.load(top_left, mask=mask).to(tl.float32)
            b = tl.load(top_left + xs3, mask=mask).to(tl.float32)
            c_ = tl.load(top_left + xs2, mask=mask).to(tl.float32)
            d = tl.load(top_left + xs2 + xs3, mask=mask).to(tl.float32)
            top_sum, top_diff = a + b, a - b
            bottom_sum, bottom_diff = c_ + d, c_ - d
            dtype = ll_ptr.dtype.element_ty
            tl.store(ll_at, ((top_sum + bottom_sum) * 0.5).to(dtype),
                     mask=mask)
            tl.store(hi_at, ((top_sum - bottom_sum) * 0.5).to(dtype),
                     mask=mask)
            tl.store(hi_at + hs2, ((top_diff + bottom_diff) * 0.5).to(dtype),
                     mask=mask)
            tl.store(hi_at + 2 * hs2,
                     ((top_diff - bottom_diff) * 0.5).to(dtype),
                     mask=mask)


def _launch(x: Tensor, ll: Tensor, highs: Tensor, synthesis: bool) -> None:
    n, c, h, w = ll.shape
    total = n * c * h * w
    if total == 0:
        return
    channels_last = c > 1 and ll.stride(1) < ll.stride(3)
    _haar_kernel[(triton.cdiv(total, BLOCK), )](
        x, ll, highs, total, c, h, w, *x.stride(), *ll.stride(),
        *highs.stride(), SYNTHESIS=synthesis, CHANNELS_LAST=channels_last,
        BLOCK=BLOCK)


def analysis(x: Tensor, ll: Tensor, highs: Tensor) -> None:
    """One level of ``x`` (N, C, H, W), even H and W, into ``ll`` (N, C,
    H/2, W/2) and ``highs`` (N, C, 3, H/2, W/2), any strides."""
    _launch(x, ll, highs, synthesis=False)


def synthesis(ll: Tensor, highs: Tensor, x: Tensor) -> None:
    """Inverse of :func:`analysis`: ``ll`` and ``highs`` into ``x``."""
    _launch(x, ll, highs, synthesis=True)


def applies(x: Tensor) -> bool:
    """Whether the Triton kernels serve ``x``: a 4D tensor on a CUDA device,
    where Triton is installed."""
    return triton is not None and x.is_cuda and x.dim() == 4
