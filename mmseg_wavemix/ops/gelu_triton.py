# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The exact GELU's backward and the gradient of the bias before it in one
Triton pass, for training on a GPU; and a bias gradient alone.

In a level MLP's backward the hidden gradient is ``grad * gelu'(hidden)``,
and the first 1x1 convolution's bias gradient is its sum over pixels:
PyTorch reads the hidden gradient once more for that sum (a tensor of
``2 D`` channels at the level's size, the largest of the MLP). Here the sums
are taken from the values in registers: each program sums a run of rows
into a partial row (fewer rows a program where the gradient has few: enough
programs to occupy the GPU), and the few partial rows are added at the end
(in a fixed order: the result does not depend on scheduling). The same kernel
without the GELU sums the rows of any gradient (:func:`bias_grad`): PyTorch's
float32 sum over the pixels of a few channels ran at a quarter of an H100's
bandwidth (session 26: 0.11 ms for 655360x64 float16).

Without a GPU the kernel runs in Triton's interpreter
(``TRITON_INTERPRET=1``), which the tests use.
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import triton_support
from .triton_support import tl, triton

# A program: BM x BC elements at a time, ROWS rows in all (its partial sum);
# smaller in the interpreter (read when the module is loaded, as Triton
# reads TRITON_INTERPRET), which runs them with numpy
BM, BC, ROWS = (16, 32, 64) if os.environ.get('TRITON_INTERPRET') == '1' \
    else (32, 128, 512)
# Programs enough to keep a GPU busy (an H100 has 132 SMs): a gradient of
# few rows (a coarser level's: 5x16x32 pixels at the recipe's batch) is
# summed in runs of fewer rows, down to BM, than ROWS, which would give it
# a program or two per column block
MIN_PROGRAMS = 4 if os.environ.get('TRITON_INTERPRET') == '1' else 512


def applies(grad: Tensor, hidden: Tensor) -> bool:
    """Whether the kernel serves these tensors: CUDA, where a Triton that
    compiles it is installed, the same shape and dtype, both channels_last
    and dense."""
    return triton_support.serves(grad) and \
        _rows(grad) is not None and _rows(hidden) is not None and \
        grad.shape == hidden.shape and grad.dtype == hidden.dtype


def _rows(x: Tensor) -> Optional[Tensor]:
    """The (N*H*W, C) row-major view of a dense channels_last 4D tensor."""
    if x.dim() != 4:
        return None
    rows = x.permute(0, 2, 3, 1)
    return rows.reshape(-1, rows.shape[-1]) if rows.is_contiguous() else None


if triton is not None:

    @triton.jit
    def _add(a, b):
        return a + b

    @triton.jit
    def _gelu_backward_kernel(grad_ptr, hidden_ptr, partial_ptr, M, C,
                              BM: tl.constexpr, BC: tl.constexpr,
                              ROWS: tl.constexpr, GELU: tl.constexpr):
        """grad *= gelu'(hidden) over rows [pid0 * ROWS, +ROWS) and columns
        of block pid1 (GELU; else grad as it is), their column sums into
        partial row pid0."""
        cols = tl.program_id(1) * BC + tl.arange(0, BC)
        col_ok = cols < C
        first = tl.program_id(0).to(tl.int64) * ROWS
        sums = tl.full((BC, ), 0., tl.float32)
        for r in range(0, ROWS, BM):
            rows = first + r + tl.arange(0, BM)
            mask = (rows < M)[:, None] & col_ok[None, :]
            offsets = rows[:, None] * C + cols[None, :]
            out = tl.load(grad_ptr + offsets, mask=mask,
                          other=0.).to(tl.float32)
            if GELU:
                h = tl.load(hidden_ptr + offsets, mask=mask,
                            other=0.).to(tl.float32)
                # d/dh h * Phi(h) = Phi(h) + h * phi(h)
                cdf = 0.5 * (1. + tl.math.erf(h * 0.7071067811865476))
                pdf = tl.exp(-0.5 * h * h) * 0.3989422804014327
                out = out * (cdf + h * pdf)
                tl.store(grad_ptr + offsets,
                         out.to(grad_ptr.dtype.element_ty), mask=mask)
            # masked elements are 0 (tl.reduce with a combine function of
            # this module: Triton's own tl.sum is not interpreted after a
            # reload into the interpreter, as the tests do)
            sums += tl.reduce(out, 0, _add)
        tl.store(partial_ptr + tl.program_id(0) * C + cols, sums,
                 mask=col_ok)


def gelu_backward_with_bias_grad_(grad: Tensor,
                                  hidden: Tensor) -> Tuple[Tensor, Tensor]:
    """``grad * gelu'(hidden)`` (exact GELU) in place, and its sum over all
    but the channel dimension: the gradient of the bias that ``hidden``
    includes.

    Args:
        grad (Tensor): The gradient of ``gelu(hidden)``, (N, C, H, W),
            channels_last; overwritten.
        hidden (Tensor): The GELU's input, same shape, dtype and layout.

    Returns:
        tuple[Tensor, Tensor]: ``grad`` (now the gradient of ``hidden``) and
        the bias gradient (C, ) in float32.
    """
    if triton is None:
        raise RuntimeError('gelu_backward_with_bias_grad_ needs Triton >= '
                           '3.0 (found '
                           f'{triton_support.TOO_OLD or "none"})')
    if grad.shape != hidden.shape or grad.dtype != hidden.dtype or \
            _rows(grad) is None or _rows(hidden) is None:
        raise ValueError('gelu_backward_with_bias_grad_ needs two dense '
                         'channels_last tensors of one shape and dtype, got '
                         f'{tuple(grad.shape)} {grad.dtype} with strides '
                         f'{grad.stride()} and {tuple(hidden.shape)} '
                         f'{hidden.dtype} with strides {hidden.stride()}')
    return grad, _column_sums(grad, hidden)


def rows_per_program(m: int, c: int) -> int:
    """The rows each program sums, for ``m`` rows of ``c`` columns:
    ``ROWS``, or the largest power of two below it, down to ``BM``, that
    gives at least ``MIN_PROGRAMS`` programs."""
    rows = ROWS
    while rows > BM and \
            triton.cdiv(m, rows) * triton.cdiv(c, BC) < MIN_PROGRAMS:
        rows //= 2
    return rows


def _column_sums(grad: Tensor, hidden: Optional[Tensor]) -> Tensor:
    """The kernel over the rows of ``grad`` (dense channels_last, or a
    row-major matrix: ``shape[1]`` values a row either way; with ``hidden``
    GELU's backward in place first), the column sums in float32."""
    c = grad.shape[1]
    m = grad.numel() // c if c else grad.shape[0]
    rows = rows_per_program(m, c)
    partial = grad.new_empty(max(1, triton.cdiv(m, rows)), c,
                             dtype=torch.float32)
    if grad.numel():
        _gelu_backward_kernel[(triton.cdiv(m, rows), triton.cdiv(c, BC))](
            grad, grad if hidden is None else hidden, partial, m, c, BM=BM,
            BC=BC, ROWS=rows, GELU=hidden is not None)
    else:
        partial.zero_()
    return partial.sum(0)


def bias_grad(rows: Tensor) -> Tensor:
    """The column sums of a row-major (M, C) gradient in float32, in one
    pass (the gradient of a bias added to each of its rows).

    Args:
        rows (Tensor): (M, C), contiguous, on a GPU.

    Returns:
        Tensor: (C, ) float32.
    """
    if triton is None:
        raise RuntimeError('bias_grad needs Triton >= 3.0 (found '
                           f'{triton_support.TOO_OLD or "none"})')
    if rows.dim() != 2 or not rows.is_contiguous():
        raise ValueError('bias_grad needs a contiguous (M, C) matrix, got '
                         f'{tuple(rows.shape)} with strides {rows.stride()}')
    return _column_sums(rows, None)
