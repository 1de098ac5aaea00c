# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Triton kernels for a WaveMix block on a GPU (the level MLP in inference,
the block's input gradient in training), each a matrix product with the
elementwise work done on its result in registers:

- :func:`linear_gelu`: the first 1x1 convolution of the concatenation of
  two tensors, its bias and the exact GELU, without the concatenation in
  memory and without a pass of the activation over the hidden tensor.
- :func:`conv_transpose_k4s2`: ``ConvTranspose2d(kernel_size=4, stride=2,
  padding=1)`` (the level's 2x upsampling) as four implicit matrix products,
  one per output phase (each output pixel sees 2x2 input pixels), with its
  bias and an optional residual added before the single store. cuDNN adds
  the bias in a separate pass and the residual is another one, both over
  the largest tensor of the block.
- :func:`conv_transpose_k4s2_tma`: the same with its operands brought by
  the tensor memory accelerator of GPUs of compute capability 9 and later
  (a block of input pixels per program, whose tap-shifted copies are boxes
  of the input that the TMA fills with zeros outside the image).
- :func:`add_bias_residual_`: that bias and residual in one pass over a
  transposed convolution's output computed without bias (by cuDNN), or
  in training a BatchNorm's scale and shift and the residual.
- :func:`matmul_add`: ``a @ w + c`` in one pass over ``c`` (in training, a
  block's input gradient: the reduction's plus the residual's).

The products accumulate in float32 and take tensors of any strides
(fastest in channels_last; the TMA kernel only channels_last). Without a
GPU they run in Triton's interpreter (``TRITON_INTERPRET=1``), which the
tests use; ``tools/analysis_tools/triton_codegen.py`` compiles them for a
GPU without one, to see their machine code.
"""
import functools
import inspect
import os
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from . import triton_support
from .triton_support import tl, triton

try:  # Triton >= 3.4: tensor-memory (TMA) descriptors made on the host
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:
    TensorDescriptor = None

# Read when the kernels are defined, as Triton itself does.
_INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'
# False where Triton could not build the kernels' tuners (an older Triton,
# 3.2 say, without a GPU driver): the kernels are not used then
_TUNERS_BUILT = True
# Block sizes in the interpreter (small: it runs them with numpy).
_INTERPRETER_BLOCKS = dict(BM=16, BN=16, BK=16)


def applies(x: Tensor, dtype: Optional[torch.dtype] = None) -> bool:
    """Whether the kernels serve ``x`` computed in ``dtype`` (default: its
    own): a CUDA tensor, float16 or bfloat16, where a Triton that compiles
    them is installed (float32 runs the layers: tl.dot would round it to
    TF32)."""
    dtype = x.dtype if dtype is None else dtype
    return dtype in (torch.float16, torch.bfloat16) and _TUNERS_BUILT and \
        triton_support.serves(x)


def tensor_core_products(device: torch.device) -> bool:
    """Whether Triton's matrix products run on ``device``'s tensor cores:
    on GPUs of compute capability 8.0 or later. Triton 3 compiles them to
    scalar multiply-adds before that (V100, T4), spilling 17-25 KB of
    registers a thread for these kernels' tiles
    (``tools/analysis_tools/triton_codegen.py --arch 70``). Elsewhere
    (Triton's interpreter on CPU) True."""
    return device.type != 'cuda' or _capability(device.index) >= (8, 0)


@functools.lru_cache(maxsize=None)
def _capability(index: Optional[int]) -> Tuple[int, int]:
    # asked at each eager step's level MLPs (a host-bound step on the GPU)
    return torch.cuda.get_device_capability(index)


def products_apply(x: Tensor, dtype: Optional[torch.dtype] = None) -> bool:
    """Whether the kernels with matrix products (:func:`linear_gelu`,
    :func:`conv_transpose_k4s2`, :func:`matmul_add`) serve ``x``: where
    :func:`applies`, on a GPU with :func:`tensor_core_products`. Elsewhere
    cuBLAS and cuDNN serve without the kernels being tuned (a few seconds
    of compilation per tile config and problem size) and timed against
    them."""
    return applies(x, dtype) and tensor_core_products(x.device)


def _configs():
    """Tile sizes tried once per problem size on a GPU (those
    :func:`_fitting` its output channels)."""
    # the best on an H200 at WaveMix-256's level sizes (fp16, 1024x2048), and
    # two for a few output channels (the decode head's classes folded in)
    shapes = ((128, 256, 64, 8, 3), (128, 128, 32, 4, 4), (64, 128, 64, 4, 3),
              (64, 256, 64, 8, 4), (64, 64, 64, 4, 4), (128, 128, 64, 8, 3),
              (128, 32, 64, 4, 4), (64, 32, 64, 4, 4))
    return [
        triton.Config(dict(BM=bm, BN=bn, BK=bk), num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in shapes
    ]


def _set_tma_blocks(nargs: dict) -> None:
    """Give the descriptors of :func:`_conv_transpose_tma_kernel` the
    blocks of a tile config (a host descriptor carries its block shape)."""
    nargs['x_desc'].block_shape = [1, nargs['BH'], nargs['BW'], nargs['BK']]
    nargs['w_desc'].block_shape = [nargs['BK'], nargs['BN']]


def _tma_configs():
    """Tile configs of :func:`_conv_transpose_tma_kernel`: BH x BW input
    pixels (of one output phase) by BN output channels. Compiled for sm_90
    (``tools/analysis_tools/triton_codegen.py``) all but the first keep
    their registers (the first, as the other kernel's best tile on an H200,
    spills 192 bytes)."""
    shapes = ((8, 16, 256, 64, 8, 3), (8, 16, 128, 64, 8, 3),
              (8, 16, 128, 64, 8, 4), (16, 16, 128, 64, 8, 4),
              (8, 32, 128, 64, 8, 4), (8, 8, 128, 64, 4, 4),
              (4, 16, 128, 64, 4, 4))
    return [
        triton.Config(dict(BH=bh, BW=bw, BN=bn, BK=bk), num_warps=w,
                      num_stages=st, pre_hook=_set_tma_blocks)
        for bh, bw, bn, bk, w, st in shapes
    ]


def tuning_size(rows: int) -> int:
    """The number of rows the tile sizes are tuned for: ``rows`` rounded up
    to a power of two, so that images of many sizes (a dataset resized with
    its aspect ratio kept) are tuned for a few times, not once each."""
    return 1 << max(rows - 1, 0).bit_length()


def _fitting(configs, named_args, **kwargs):
    """The tile configs whose column block fits the output channels ``CO``:
    no wider than they need (rounded up to a power of two, at least 32), a
    wider tile computing columns that are thrown away, and 64 or wider where
    they fill that; where none fits, the narrowest. Each config tuned costs
    a compilation."""
    width = max(32, triton.next_power_of_2(named_args['CO']))
    fit = [
        c for c in configs if min(width, 64) <= c.kwargs['BN'] <= width
    ]
    narrowest = min(c.kwargs['BN'] for c in configs)
    return fit or [c for c in configs if c.kwargs['BN'] == narrowest]


def _tuned(key, configs=_configs):
    """Autotune a kernel on a GPU, over the configs :func:`_fitting` its
    problem, the timings kept in Triton's cache directory where Triton can
    (3.6 can, 3.2 cannot; configs without a pre-hook): a later process
    (``tools/test.py --fast`` run again, the next step of
    ``tools/gpu_checks.sh``) does not tune the same problem again. The
    interpreter takes fixed blocks."""

    def wrap(kernel):
        global _TUNERS_BUILT
        if _INTERPRET:
            return kernel
        cache = 'cache_results' in inspect.signature(
            triton.autotune).parameters
        try:
            return triton.autotune(
                configs(),
                key=key,
                prune_configs_by=dict(early_config_prune=_fitting),
                **(dict(cache_results=True) if cache else {}))(kernel)
        except RuntimeError:  # Triton 3.2 asks a GPU driver for a timer
            _TUNERS_BUILT = False
            return kernel

    return wrap


if triton is not None:

    @triton.jit
    def _tile(M, CO, height, width, BM: tl.constexpr, BN: tl.constexpr):
        """This program's tile of the (M pixels, CO channels) output: the
        rows in range, its columns, those in range, and the pixel (n, i, j)
        of each row."""
        pid = tl.program_id(0)
        col_tiles = (CO + BN - 1) // BN
        rows = (pid // col_tiles) * BM + tl.arange(0, BM)
        cols = (pid % col_tiles) * BN + tl.arange(0, BN)
        pixels = rows.to(tl.int64)
        return (rows < M, cols, cols < CO, pixels // width // height,
                (pixels // width) % height, pixels % width)

    @_tuned(key=['M_TUNED', 'CA', 'CB', 'CO', 'STORE_PRE'])
    @triton.jit
    def _linear_gelu_kernel(a_ptr, b_ptr, w_ptr, bias_ptr, pre_ptr, out_ptr,
                            M, M_TUNED, height, width, CA, CB, CO, as0, as1,
                            as2, as3, bs0, bs1, bs2, bs3, os0, os1, os2, os3,
                            STORE_PRE: tl.constexpr, BM: tl.constexpr,
                            BN: tl.constexpr, BK: tl.constexpr):
        """out = gelu([a, b] @ w + bias) over pixels, and with ``STORE_PRE``
        pre = [a, b] @ w + bias (of ``out``'s strides); ``w`` is (CA + CB,
        CO) row-major; CB = 0 without ``b``. ``M_TUNED``:
        :func:`tuning_size` of ``M``, for the tuner's key only."""
        row_ok, cols, col_ok, n, i, j = _tile(M, CO, height, width, BM, BN)
        ks = tl.arange(0, BK)
        acc = tl.full((BM, BN), 0., tl.float32)
        # one loop over a's channels (padded to whole blocks), then b's:
        # Triton pipelines a loop as a whole, and two short loops (4 and 2
        # blocks in WaveMix) would each fill and drain the pipeline
        padded = (CA + BK - 1) // BK * BK
        for k in range(0, padded + CB, BK):
            in_a = k < padded
            kk = tl.where(in_a, k, k - padded) + ks
            # the strides selected as scalars: a select of two offset
            # vectors would hide their alignment from the compiler (no
            # vector loads, no asynchronous copies)
            rows_at = n * tl.where(in_a, as0, bs0) + i * tl.where(
                in_a, as2, bs2) + j * tl.where(in_a, as3, bs3)
            k_ok = kk < tl.where(in_a, CA, CB)
            x = tl.load(tl.where(in_a, a_ptr, b_ptr) + rows_at[:, None] +
                        kk[None, :] * tl.where(in_a, as1, bs1),
                        mask=row_ok[:, None] & k_ok[None, :], other=0.)
            w = tl.load(w_ptr + (tl.where(in_a, 0, CA) + kk[:, None]) * CO +
                        cols[None, :],
                        mask=k_ok[:, None] & col_ok[None, :], other=0.)
            acc = tl.dot(x, w, acc)
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.)[None, :]
        at = (n * os0 + i * os2 + j * os3)[:, None] + cols[None, :] * os1
        out_mask = row_ok[:, None] & col_ok[None, :]
        if STORE_PRE:
            tl.store(pre_ptr + at, acc.to(pre_ptr.dtype.element_ty),
                     mask=out_mask)
        acc = 0.5 * acc * (1. + tl.math.erf(acc * 0.7071067811865476))
        tl.store(out_ptr + at, acc.to(out_ptr.dtype.element_ty),
                 mask=out_mask)

    @_tuned(key=['M_TUNED', 'C', 'CO'])
    @triton.jit
    def _conv_transpose_kernel(x_ptr, w_ptr, bias_ptr, res_ptr, out_ptr, M,
                               M_TUNED, height, width, C, CO, xs0, xs1, xs2,
                               xs3, os0, os1, os2, os3, rs0, rs1, rs2, rs3,
                               HAS_RESIDUAL: tl.constexpr, BM: tl.constexpr,
                               BN: tl.constexpr, BK: tl.constexpr):
        """One output phase (program axis 1) of a k4 s2 p1 transposed
        convolution of ``x`` (N, C, h, w) over its h*w pixels; ``w`` is
        (4 phases, 4 taps, C, CO) from :func:`pack_conv_transpose_weight`;
        ``M_TUNED`` as for :func:`_linear_gelu_kernel`.
        """
        phase = tl.program_id(1)
        # output pixel (2m + py, 2q + px) sees input rows m and m - 1 (py =
        # 0) or m + 1 (py = 1), the same for columns
        py = phase // 2
        px = phase % 2
        row_ok, cols, col_ok, n, m, q = _tile(M, CO, height, width, BM, BN)
        ks = tl.arange(0, BK)
        acc = tl.full((BM, BN), 0., tl.float32)
        # one loop over the 4 taps x C channels (each tap's channels padded
        # to whole blocks), which Triton pipelines as a whole
        padded = (C + BK - 1) // BK * BK
        for k in range(0, 4 * padded, BK):
            tap = k // padded
            kk = k - tap * padded + ks
            iy = m + (tap // 2) * (2 * py - 1)
            ix = q + (tap % 2) * (2 * px - 1)
            inside = row_ok & (iy >= 0) & (iy < height) & (ix >= 0) & (
                ix < width)
            x_at = x_ptr + n * xs0 + iy * xs2 + ix * xs3
            a = tl.load(x_at[:, None] + kk[None, :] * xs1,
                        mask=inside[:, None] & (kk[None, :] < C), other=0.)
            w = tl.load(w_ptr + ((phase * 4 + tap) * C + kk[:, None]) * CO +
                        cols[None, :],
                        mask=(kk[:, None] < C) & col_ok[None, :], other=0.)
            acc = tl.dot(a, w, acc)
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.)[None, :]
        oy = 2 * m + py
        ox = 2 * q + px
        mask = row_ok[:, None] & col_ok[None, :]
        if HAS_RESIDUAL:
            res_at = res_ptr + n * rs0 + oy * rs2 + ox * rs3
            acc += tl.load(res_at[:, None] + cols[None, :] * rs1, mask=mask,
                           other=0.).to(tl.float32)
        out_at = out_ptr + n * os0 + oy * os2 + ox * os3
        tl.store(out_at[:, None] + cols[None, :] * os1,
                 acc.to(out_ptr.dtype.element_ty), mask=mask)

    @_tuned(key=['M_TUNED', 'C', 'CO'], configs=_tma_configs)
    @triton.jit
    def _conv_transpose_tma_kernel(x_desc, w_desc, bias_ptr, res_ptr,
                                   out_ptr, M_TUNED, height, width, C, CO,
                                   os0, os1, os2, os3, rs0, rs1, rs2, rs3,
                                   HAS_RESIDUAL: tl.constexpr,
                                   BH: tl.constexpr, BW: tl.constexpr,
                                   BN: tl.constexpr, BK: tl.constexpr):
        """:func:`_conv_transpose_kernel` with its operands brought by the
        tensor memory accelerator (TMA): a program takes a BH x BW block of
        input pixels, whose tap-shifted copies are plain boxes of the
        (N, h, w, C) input that the TMA fills with zeros outside the image.
        ``w_desc`` is the packed weight as a (16 C, CO) matrix."""
        phase = tl.program_id(1)
        py = phase // 2
        px = phase % 2
        pid = tl.program_id(0)
        col_tiles = (CO + BN - 1) // BN
        x_tiles = (width + BW - 1) // BW
        y_tiles = (height + BH - 1) // BH
        c0 = (pid % col_tiles) * BN
        rest = pid // col_tiles
        x0 = (rest % x_tiles) * BW
        rest = rest // x_tiles
        y0 = (rest % y_tiles) * BH
        n = rest // y_tiles
        acc = tl.full((BH * BW, BN), 0., tl.float32)
        # one loop over 4 taps x C channels, each tap padded to whole blocks
        # (the padding reads zeros: the box leaves the tensor's channels)
        padded = (C + BK - 1) // BK * BK
        for k in range(0, 4 * padded, BK):
            tap = k // padded
            kc = k - tap * padded
            a = x_desc.load([
                n, y0 + (tap // 2) * (2 * py - 1),
                x0 + (tap % 2) * (2 * px - 1), kc
            ])
            w = w_desc.load([(phase * 4 + tap) * C + kc, c0])
            acc = tl.dot(a.reshape(BH * BW, BK), w, acc)
        r = tl.arange(0, BH * BW)
        iy = y0 + r // BW
        ix = x0 + r % BW
        cols = c0 + tl.arange(0, BN)
        col_ok = cols < CO
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.)[None, :]
        oy = (2 * iy + py).to(tl.int64)
        ox = (2 * ix + px).to(tl.int64)
        mask = ((iy < height) & (ix < width))[:, None] & col_ok[None, :]
        if HAS_RESIDUAL:
            res_at = res_ptr + n.to(tl.int64) * rs0 + oy * rs2 + ox * rs3
            acc += tl.load(res_at[:, None] + cols[None, :] * rs1, mask=mask,
                           other=0.).to(tl.float32)
        out_at = out_ptr + n.to(tl.int64) * os0 + oy * os2 + ox * os3
        tl.store(out_at[:, None] + cols[None, :] * os1,
                 acc.to(out_ptr.dtype.element_ty), mask=mask)

    @_tuned(key=['M_TUNED', 'K', 'CO'])
    @triton.jit
    def _matmul_add_kernel(a_ptr, w_ptr, c_ptr, out_ptr, M, M_TUNED, K, CO,
                           as0, as1, ws0, ws1, cs0, cs1, os0, os1,
                           BM: tl.constexpr, BN: tl.constexpr,
                           BK: tl.constexpr):
        """out = a @ w + c for matrices a (M, K), w (K, CO), c and out (M,
        CO) of any strides; ``M_TUNED`` as for :func:`_linear_gelu_kernel`.
        """
        pid = tl.program_id(0)
        col_tiles = (CO + BN - 1) // BN
        rows = ((pid // col_tiles) * BM + tl.arange(0, BM)).to(tl.int64)
        cols = (pid % col_tiles) * BN + tl.arange(0, BN)
        row_ok = rows < M
        col_ok = cols < CO
        ks = tl.arange(0, BK)
        acc = tl.full((BM, BN), 0., tl.float32)
        for k in range(0, K, BK):
            kk = k + ks
            k_ok = kk < K
            x = tl.load(a_ptr + rows[:, None] * as0 + kk[None, :] * as1,
                        mask=row_ok[:, None] & k_ok[None, :], other=0.)
            w = tl.load(w_ptr + kk[:, None] * ws0 + cols[None, :] * ws1,
                        mask=k_ok[:, None] & col_ok[None, :], other=0.)
            acc = tl.dot(x, w, acc)
        mask = row_ok[:, None] & col_ok[None, :]
        acc += tl.load(c_ptr + rows[:, None] * cs0 + cols[None, :] * cs1,
                       mask=mask, other=0.).to(tl.float32)
        tl.store(out_ptr + rows[:, None] * os0 + cols[None, :] * os1,
                 acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _add_bias_residual_kernel(out_ptr, scale_ptr, bias_ptr, res_ptr, rows,
                                  cols, C, CHANNEL_IS_COLUMN: tl.constexpr,
                                  HAS_SCALE: tl.constexpr,
                                  HAS_RESIDUAL: tl.constexpr,
                                  BR: tl.constexpr, BL: tl.constexpr):
        """out = out * scale[channel] + bias[channel] (+ res) over a dense
        tensor seen as a (rows, cols) matrix: the channel is the column
        (channels_last) or the row modulo C (NCHW, a row per image and
        channel), taken once per column or row, not per element."""
        row = tl.program_id(0) * BR + tl.arange(0, BR)
        col = tl.program_id(1) * BL + tl.arange(0, BL)
        row_ok, col_ok = row < rows, col < cols
        mask = row_ok[:, None] & col_ok[None, :]
        offsets = row.to(tl.int64)[:, None] * cols + col[None, :]
        if CHANNEL_IS_COLUMN:
            channel, channel_ok = col[None, :], col_ok[None, :]
        else:
            channel, channel_ok = (row % C)[:, None], row_ok[:, None]
        out = tl.load(out_ptr + offsets, mask=mask).to(tl.float32)
        if HAS_SCALE:
            out *= tl.load(scale_ptr + channel, mask=channel_ok)
        out += tl.load(bias_ptr + channel, mask=channel_ok)
        if HAS_RESIDUAL:
            out += tl.load(res_ptr + offsets, mask=mask).to(tl.float32)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty),
                 mask=mask)


def _grid(rows: int, cols: int, phases: int = 1):
    return lambda meta: (triton.cdiv(rows, meta['BM']) * triton.cdiv(
        cols, meta['BN']), phases)


def _launch(kernel, grid, args, config: Optional[dict], **constants):
    """Run ``kernel``: tuned, with fixed blocks in the interpreter, or with
    ``config`` (BM, BN, BK, num_warps, num_stages) for a tile sweep."""
    if config is not None and isinstance(kernel, triton.runtime.Autotuner):
        kernel = kernel.fn  # the kernel itself, without the tuner
    elif config is None:
        config = _INTERPRETER_BLOCKS if _INTERPRET else {}
    kernel[grid](*args, **constants, **config)


def _empty_like_layout(like: Tensor, channels: int, height: int,
                       width: int) -> Tensor:
    """An empty (N, channels, height, width) tensor in ``like``'s memory
    format (channels_last, else contiguous)."""
    channels_last = not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last)
    return torch.empty(
        like.shape[0],
        channels,
        height,
        width,
        dtype=like.dtype,
        device=like.device,
        memory_format=torch.channels_last
        if channels_last else torch.contiguous_format)


def pack_linear_weight(weight: Tensor) -> Tensor:
    """A 1x1 convolution's weight (out, in, 1, 1) as the (in, out)
    row-major matrix :func:`linear_gelu` reads."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def linear_gelu(a: Tensor,
                b: Optional[Tensor],
                weight: Tensor,
                bias: Tensor,
                config: Optional[dict] = None,
                pre_activation: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """``gelu(conv1x1(cat([a, b], 1)))`` (exact GELU) without the
    concatenation.

    Args:
        a (Tensor): (N, CA, H, W).
        b (Tensor, optional): (N, CB, H, W), the rest of the input channels.
        weight (Tensor): (CA + CB, CO) from :func:`pack_linear_weight`, in
            the dtype of ``a``.
        bias (Tensor): (CO, ).
        config (dict, optional): Tile sizes and launch options (BM, BN, BK,
            num_warps, num_stages) instead of the tuned ones, for a sweep.
        pre_activation (bool): Also return the convolution's output, the
            GELU's input (its backward needs it), from the same pass.
            Default: False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: (N, CO, H, W) in ``a``'s dtype and
        memory format; with ``pre_activation`` the GELU's input and output.
    """
    n, ca, h, w = a.shape
    cb = 0 if b is None else b.shape[1]
    co = weight.shape[1]
    if weight.shape[0] != ca + cb:
        raise ValueError(f'weight has {weight.shape[0]} input channels, the '
                         f'inputs {ca} + {cb}')
    out = _empty_like_layout(a, co, h, w)
    pre = torch.empty_like(out) if pre_activation else out
    if out.numel():
        other = a if b is None else b
        _launch(_linear_gelu_kernel, _grid(n * h * w, co),
                (a, other, weight, bias, pre, out, n * h * w,
                 tuning_size(n * h * w), h, w, ca, cb, co,
                 *a.stride(), *other.stride(), *out.stride()), config,
                STORE_PRE=pre_activation)
    return (pre, out) if pre_activation else out


def pack_conv_transpose_weight(weight: Tensor) -> Tensor:
    """A ``ConvTranspose2d(kernel_size=4, stride=2, padding=1)`` weight (C,
    CO, 4, 4) as the (4 phases, 4 taps, C, CO) tensor
    :func:`conv_transpose_k4s2` reads: output phase (py, px) and tap (ty, tx)
    use kernel element (1 + py, 1 + px) for tap 0 and (3 - 3 py, 3 - 3 px)
    for tap 1 of each axis."""
    if weight.dim() != 4 or weight.shape[2:] != (4, 4):
        raise ValueError('expected a (C, CO, 4, 4) transposed-convolution '
                         f'weight, got {tuple(weight.shape)}')
    taps = [[1, 3], [2, 0]]  # kernel index of tap t in phase p: taps[p][t]
    return torch.stack([
        weight[:, :, taps[py][ty], taps[px][tx]] for py in range(2)
        for px in range(2) for ty in range(2) for tx in range(2)
    ]).view(4, 4, *weight.shape[:2]).contiguous()


def _conv_transpose_output(x: Tensor, weight: Tensor,
                           residual: Optional[Tensor]) -> Tensor:
    """The empty output of :func:`conv_transpose_k4s2` for ``x``, the
    packed ``weight`` and ``residual`` checked to fit."""
    n, c, h, w = x.shape
    if weight.shape[:3] != (4, 4, c):
        raise ValueError(f'weight of shape {tuple(weight.shape)} does not '
                         f'fit an input of {c} channels')
    out = _empty_like_layout(x, weight.shape[-1], 2 * h, 2 * w)
    if residual is not None and residual.shape != out.shape:
        raise ValueError(f'residual of shape {tuple(residual.shape)}, the '
                         f'output is {tuple(out.shape)}')
    return out


def conv_transpose_k4s2(x: Tensor,
                        weight: Tensor,
                        bias: Tensor,
                        residual: Optional[Tensor] = None,
                        config: Optional[dict] = None) -> Tensor:
    """``conv_transpose2d(x, stride=2, padding=1) + bias (+ residual)`` for
    a 4x4 kernel in one pass.

    Args:
        x (Tensor): (N, C, h, w).
        weight (Tensor): From :func:`pack_conv_transpose_weight`, in the
            dtype of ``x``.
        bias (Tensor): (CO, ).
        residual (Tensor, optional): (N, CO, 2h, 2w), added to the result.
        config (dict, optional): As for :func:`linear_gelu`.

    Returns:
        Tensor: (N, CO, 2h, 2w) in ``x``'s dtype and memory format.
    """
    n, c, h, w = x.shape
    out = _conv_transpose_output(x, weight, residual)
    co = out.shape[1]
    if out.numel():
        res = out if residual is None else residual
        _launch(_conv_transpose_kernel, _grid(n * h * w, co, phases=4),
                (x, weight, bias, res, out, n * h * w,
                 tuning_size(n * h * w), h, w, c, co,
                 *x.stride(), *out.stride(), *res.stride()), config,
                HAS_RESIDUAL=residual is not None)
    return out


def tma_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`conv_transpose_k4s2_tma` serves ``x`` with the packed
    ``weight``: a GPU with a TMA (compute capability 9 or more; always in
    the interpreter), a Triton with host descriptors, ``x`` channels_last
    and dense, rows of 16-byte multiples as the TMA needs."""
    if triton is None or TensorDescriptor is None or x.dim() != 4:
        return False
    if not _INTERPRET and not (
            x.is_cuda and torch.cuda.get_device_capability(x.device)[0] >= 9):
        return False
    size = x.element_size()
    return x.is_contiguous(memory_format=torch.channels_last) and \
        weight.is_contiguous() and x.shape[1] * size % 16 == 0 and \
        weight.shape[-1] * size % 16 == 0 and \
        x.data_ptr() % 16 == 0 and weight.data_ptr() % 16 == 0


def conv_transpose_k4s2_tma(x: Tensor,
                            weight: Tensor,
                            bias: Tensor,
                            residual: Optional[Tensor] = None,
                            config: Optional[dict] = None) -> Tensor:
    """:func:`conv_transpose_k4s2` with the operands loaded by the TMA
    (where :func:`tma_applies`); same arguments and result.

    Args:
        x (Tensor): (N, C, h, w), channels_last.
        weight (Tensor): From :func:`pack_conv_transpose_weight`.
        bias (Tensor): (CO, ).
        residual (Tensor, optional): (N, CO, 2h, 2w).
        config (dict, optional): BH, BW, BN, BK, num_warps, num_stages
            instead of the tuned ones, for a sweep.

    Returns:
        Tensor: (N, CO, 2h, 2w) in ``x``'s dtype and memory format.
    """
    n, c, h, w = x.shape
    out = _conv_transpose_output(x, weight, residual)
    co = out.shape[1]
    if not tma_applies(x, weight):
        raise ValueError('conv_transpose_k4s2_tma needs a dense '
                         'channels_last input on a GPU with a TMA (see '
                         'tma_applies); use conv_transpose_k4s2')
    if not out.numel():
        return out
    # block shapes are set per tile config (_set_tma_blocks)
    x_desc = TensorDescriptor(x.permute(0, 2, 3, 1), [n, h, w, c],
                              [h * w * c, w * c, c, 1], [1, 1, 1, 1])
    flat = weight.view(16 * c, co)
    w_desc = TensorDescriptor(flat, [16 * c, co], [co, 1], [1, 1])
    res = out if residual is None else residual
    args = (x_desc, w_desc, bias, res, out, tuning_size(n * h * w), h, w, c,
            co, *out.stride(), *res.stride())

    def grid(meta):
        return (n * triton.cdiv(h, meta['BH']) * triton.cdiv(w, meta['BW']) *
                triton.cdiv(co, meta['BN']), 4)

    kernel = _conv_transpose_tma_kernel
    if config is None and _INTERPRET:
        config = dict(BH=4, BW=4, BN=16, BK=16)
    if config is not None:
        blocks = {k: config[k] for k in ('BH', 'BW', 'BN', 'BK')}
        _set_tma_blocks(dict(x_desc=x_desc, w_desc=w_desc, **blocks))
    _launch(kernel, grid, args, config, HAS_RESIDUAL=residual is not None)
    return out


def matmul_add(a: Tensor,
               w: Tensor,
               c: Tensor,
               config: Optional[dict] = None) -> Tensor:
    """``a @ w + c`` in one pass over ``c``, accumulated in float32 and
    rounded once. ``torch.addmm(c, a, w)`` first copies ``c`` into its
    output and then adds the product there: two passes more over a matrix
    of the output's size (for a WaveMix block's input gradient, the
    residual's gradient added to the reduction's, 335 MB at batch 5 and
    1024x2048 in float16).

    Args:
        a (Tensor): (M, K).
        w (Tensor): (K, CO), in ``a``'s dtype.
        c (Tensor): (M, CO).
        config (dict, optional): Tile sizes and launch options, as for
            :func:`linear_gelu`.

    Returns:
        Tensor: (M, CO), row-major, in ``a``'s dtype.
    """
    (m, k), co = a.shape, w.shape[1]
    if w.shape[0] != k or c.shape != (m, co):
        raise ValueError(f'matmul_add of {tuple(a.shape)} @ '
                         f'{tuple(w.shape)} + {tuple(c.shape)}')
    out = a.new_empty(m, co)
    if out.numel():
        _launch(_matmul_add_kernel, _grid(m, co),
                (a, w, c, out, m, tuning_size(m), k, co, *a.stride(),
                 *w.stride(), *c.stride(), *out.stride()), config)
    return out


def add_bias_residual_(out: Tensor,
                       bias: Tensor,
                       residual: Optional[Tensor] = None,
                       scale: Optional[Tensor] = None) -> Tensor:
    """``out = out * scale + bias (+ residual)`` in place, in one pass, with
    a per-channel ``bias`` (what cuDNN's transposed convolution leaves to
    two more passes) and ``scale`` (a BatchNorm's, applied with its
    statistics and the residual in one pass).

    Args:
        out (Tensor): (N, C, H, W), contiguous or channels_last.
        bias (Tensor): (C, ), float32.
        residual (Tensor, optional): ``out``'s shape (copied to ``out``'s
            memory format if it differs).
        scale (Tensor, optional): (C, ), float32. Default: None (1).

    Returns:
        Tensor: ``out``.
    """
    n, c, h, w = out.shape
    if out.is_contiguous():
        rows, cols = n * c, h * w
        memory_format = torch.contiguous_format
    elif out.is_contiguous(memory_format=torch.channels_last):
        rows, cols = n * h * w, c
        memory_format = torch.channels_last
    else:
        raise ValueError('add_bias_residual_ needs a contiguous or '
                         'channels_last output, got strides '
                         f'{out.stride()}')
    if residual is not None:
        if residual.shape != out.shape:
            raise ValueError(f'residual of shape {tuple(residual.shape)}, the '
                             f'output is {tuple(out.shape)}')
        if residual.stride() != out.stride():
            residual = residual.contiguous(memory_format=memory_format)
    if out.numel():
        # about 4096 elements a program (64 in the interpreter)
        block = 64 if _INTERPRET else 4096
        bl = min(triton.next_power_of_2(cols), 16 if _INTERPRET else 1024)
        br = max(1, block // bl)
        _add_bias_residual_kernel[(triton.cdiv(rows, br),
                                   triton.cdiv(cols, bl))](
            out, bias if scale is None else scale, bias,
            out if residual is None else residual, rows, cols, c,
            CHANNEL_IS_COLUMN=memory_format == torch.channels_last,
            HAS_SCALE=scale is not None, HAS_RESIDUAL=residual is not None,
            BR=br, BL=bl)
    return out
