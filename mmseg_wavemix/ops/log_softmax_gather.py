# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Each pixel's log-probability of its label, ``log_softmax(logits, 1)``
gathered at the labels (in float32), and its gradient: the softmax focal
loss's two passes over the logits. On a GPU one Triton pass each way;
elsewhere PyTorch's kernels.

PyTorch computes the float32 log-probabilities of every class and gathers
one, and in backward the float32 softmax of every class, scales it and casts
it to the logits' dtype. For the recipe's batch of 5 at 1024x2048 (19
classes, float16 logits of 0.4 GB) those are 0.8 GB float32 tensors in
each pass, made while the step holds all it keeps for backward, and about
1.2 GB (forward) and 3.5 GB (backward) of memory traffic. Here each
program takes a block of pixels, one a thread (as the accuracy kernel:
:mod:`~.accuracy`), and each thread walks its pixel's classes, twice forward
(the largest logit, then the sum of exponentials and the label's logit)
and three times backward (the third writes the gradient), the later walks
reading from the cache: forward it reads the logits and labels from memory
once and writes one float32 per pixel; backward it reads them and the
incoming gradient and writes the logits' gradient once, in their dtype and
memory layout. (The first version, a [pixels, classes] tile, took 4.97 ms
for both passes over the recipe's logits on an H100, against PyTorch's
3.84 ms, session 23: its reductions were warp shuffles, 480 and 320 a
thread, with 53 64-bit divisions and 138-188 registers.)

Without a GPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``), which the tests use.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import accuracy
from .triton_support import tl, triton


def applies(logits: Tensor, labels: Tensor) -> bool:
    """Whether the kernels serve these tensors: floating logits where the
    accuracy kernel serves them (:func:`~.accuracy.applies`: a head's
    logits and labels on a GPU)."""
    return accuracy.applies(logits, labels) and logits.is_floating_point()


if triton is not None:

    @triton.jit
    def _log_softmax_gather_kernel(logits_ptr, labels_ptr, grad_ptr, out_ptr,
                                   P, height, width, C, ls0, ls1, ls2, ls3,
                                   bs0, bs1, bs2, gs0, gs1, gs2, os0, os1,
                                   os2, os3, BACKWARD: tl.constexpr,
                                   BP: tl.constexpr):
        """Forward: ``out[n, i, j] = log_softmax(logits[n, :, i, j])[label]``
        (``out`` (N, H, W) float32; ``grad_ptr`` unused). Backward:
        ``out[n, :, i, j] = grad[n, i, j] * (onehot(label) - softmax)``
        (``out`` like the logits), over BP of the P pixels."""
        pixels = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)
        inside = pixels < P
        row = accuracy.pixel_rows(logits_ptr, pixels, height, width, ls0,
                                  ls2, ls3)
        labels = tl.load(
            accuracy.pixel_rows(labels_ptr, pixels, height, width, bs0, bs1,
                                bs2), mask=inside, other=0)
        # pixels outside: zeros (no -inf - -inf)
        largest = tl.load(row, mask=inside, other=0.).to(tl.float32)
        for c in range(1, C):
            largest = tl.maximum(
                largest,
                tl.load(row + c * ls1, mask=inside, other=0.).to(tl.float32))
        total = tl.full([BP], 0., tl.float32)
        at_label = tl.full([BP], 0., tl.float32)
        for c in range(C):
            logit = tl.load(row + c * ls1, mask=inside,
                            other=0.).to(tl.float32)
            total += tl.exp(logit - largest)
            at_label = tl.where(labels == c, logit, at_label)
        if BACKWARD:
            grad = tl.load(
                accuracy.pixel_rows(grad_ptr, pixels, height, width, gs0,
                                    gs1, gs2), mask=inside,
                other=0.).to(tl.float32)
            scale = grad / total
            out = accuracy.pixel_rows(out_ptr, pixels, height, width, os0,
                                      os2, os3)
            for c in range(C):
                logit = tl.load(row + c * ls1, mask=inside,
                                other=0.).to(tl.float32)
                value = tl.where(labels == c, grad, 0.) - \
                    scale * tl.exp(logit - largest)
                tl.store(out + c * os1,
                         value.to(out_ptr.dtype.element_ty), mask=inside)
        else:
            tl.store(
                accuracy.pixel_rows(out_ptr, pixels, height, width, os0, os1,
                                    os2),
                at_label - largest - tl.log(total), mask=inside)


def _classes_fastest(logits: Tensor) -> Tuple[Tensor, int]:
    """``logits`` and its class dim: channels_last (N, C, H, W) logits as
    their (N, H, W, C) view, classes last (PyTorch's softmax kernels run the
    class dim strided otherwise, or copy: 2.3x the time on CPU), else as
    they are."""
    if logits.dim() == 4 and not logits.is_contiguous() and \
            logits.is_contiguous(memory_format=torch.channels_last):
        return logits.permute(0, 2, 3, 1), -1
    return logits, 1


def log_softmax_gather(logits: Tensor,
                       labels: Tensor,
                       use_kernels: Optional[bool] = None) -> Tensor:
    """``log_softmax(logits, 1)`` at ``labels``, in float32.

    Args:
        logits (Tensor): (N, C, H, W) or (N, C), any memory layout.
        labels (Tensor): (N, H, W) or (N, ) integers in ``0..C-1``.
        use_kernels (bool, optional): Whether the Triton kernel computes it
            (False: PyTorch's kernels, as a benchmark compares). Default:
            None (where it :func:`applies`).

    Returns:
        Tensor: (N, H, W) or (N, ), float32.
    """
    if use_kernels is None:
        use_kernels = applies(logits, labels)
    if not use_kernels:
        logits, dim = _classes_fastest(logits)
        # dtype= casts inside the kernel: no float32 copy of the logits
        log_prob = F.log_softmax(logits, dim=dim, dtype=torch.float32)
        return log_prob.gather(dim, labels.unsqueeze(dim)).squeeze(dim)
    out = torch.empty(labels.shape, dtype=torch.float32,
                      device=logits.device)
    if labels.numel():
        _log_softmax_gather_kernel[accuracy.pixel_grid(labels)](
            logits, labels, out, out, labels.numel(), *logits.shape[2:],
            logits.shape[1], *logits.stride(), *labels.stride(), 0, 0, 0,
            *out.stride(), 0, BACKWARD=False, BP=accuracy.PIXELS)
    return out


def log_softmax_gather_backward(grad: Tensor,
                                logits: Tensor,
                                labels: Tensor,
                                use_kernels: Optional[bool] = None) -> Tensor:
    """The gradient of :func:`log_softmax_gather` for ``logits``:
    ``grad * (onehot(labels) - softmax(logits, 1))``, computed in float32,
    in the logits' dtype and memory layout.

    Args:
        grad (Tensor): The gradient of the output, (N, H, W) or (N, ).
        logits (Tensor): As given to :func:`log_softmax_gather`.
        labels (Tensor): As given to :func:`log_softmax_gather`.
        use_kernels (bool, optional): As in :func:`log_softmax_gather`.

    Returns:
        Tensor: Shaped like ``logits``.
    """
    if use_kernels is None:
        use_kernels = applies(logits, labels)
    if not use_kernels:
        logits, dim = _classes_fastest(logits)
        grad = grad.unsqueeze(dim)
        grad_logits = F.softmax(logits, dim=dim,
                                dtype=torch.float32).mul_(-grad)
        grad_logits.scatter_add_(dim, labels.unsqueeze(dim), grad)
        grad_logits = grad_logits.to(logits.dtype)
        return grad_logits.movedim(-1, 1) if dim == -1 else grad_logits
    out = torch.empty_like(logits)  # its memory layout
    if labels.numel():
        _log_softmax_gather_kernel[accuracy.pixel_grid(labels)](
            logits, labels, grad, out, labels.numel(), *logits.shape[2:],
            logits.shape[1], *logits.stride(), *labels.stride(),
            *grad.stride(), *out.stride(), BACKWARD=True,
            BP=accuracy.PIXELS)
    return out
