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
1.2 GB (forward) and 3.5 GB (backward) of memory traffic. Here each program
takes a block of pixels with all their classes in registers: forward it
reads the logits and labels and writes one float32 per pixel; backward it
reads them and the incoming gradient and writes the logits' gradient once,
in their dtype and memory layout.

Without a GPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``), which the tests use.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import accuracy
from .triton_support import tl, triton

# logits a program holds: pixels x classes (the classes padded to a power
# of two)
_ELEMENTS = 4096


def applies(logits: Tensor, labels: Tensor) -> bool:
    """Whether the kernels serve these tensors: floating logits where the
    accuracy kernel serves them (:func:`~.accuracy.applies`: a head's
    logits and labels on a GPU)."""
    return accuracy.applies(logits, labels) and logits.is_floating_point()


if triton is not None:

    # Combine functions of this module for tl.reduce: Triton's own tl.max
    # and tl.sum are not interpreted after a reload into the interpreter,
    # as the tests do.
    @triton.jit
    def _add(a, b):
        return a + b

    @triton.jit
    def _maximum(a, b):
        return tl.maximum(a, b)

    @triton.jit
    def _log_softmax_gather_kernel(logits_ptr, labels_ptr, grad_ptr, out_ptr,
                                   P, height, width, C, ls0, ls1, ls2, ls3,
                                   bs0, bs1, bs2, gs0, gs1, gs2, os0, os1,
                                   os2, os3, BACKWARD: tl.constexpr,
                                   BP: tl.constexpr, BC: tl.constexpr):
        """Forward: ``out[n, i, j] = log_softmax(logits[n, :, i, j])[label]``
        (``out`` (N, H, W) float32; ``grad_ptr`` unused). Backward:
        ``out[n, :, i, j] = grad[n, i, j] * (onehot(label) - softmax)``
        (``out`` like the logits), over BP of the P pixels."""
        pixels = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)
        inside = pixels < P
        n = pixels // (height * width)
        i = (pixels // width) % height
        j = pixels % width
        classes = tl.arange(0, BC)
        mask = inside[:, None] & (classes[None, :] < C)
        logits = tl.load(
            logits_ptr + (n * ls0 + i * ls2 + j * ls3)[:, None] +
            classes[None, :] * ls1, mask=mask,
            other=float('-inf')).to(tl.float32)
        # pixels outside: zeros, not -inf - -inf
        largest = tl.where(inside, tl.reduce(logits, 1, _maximum), 0.)
        exp = tl.exp(logits - largest[:, None])
        total = tl.reduce(exp, 1, _add)
        labels = tl.load(labels_ptr + n * bs0 + i * bs1 + j * bs2,
                         mask=inside, other=0)
        is_label = classes[None, :] == labels[:, None]
        if BACKWARD:
            grad = tl.load(grad_ptr + n * gs0 + i * gs1 + j * gs2,
                           mask=inside, other=0.).to(tl.float32)
            out = grad[:, None] * (is_label.to(tl.float32) -
                                   exp / total[:, None])
            tl.store(
                out_ptr + (n * os0 + i * os2 + j * os3)[:, None] +
                classes[None, :] * os1,
                out.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            at_label = tl.reduce(tl.where(is_label, logits, 0.), 1, _add)
            tl.store(out_ptr + n * os0 + i * os1 + j * os2,
                     at_label - largest - tl.log(total), mask=inside)


def _grid_and_blocks(logits: Tensor, labels: Tensor):
    classes = triton.next_power_of_2(logits.shape[1])
    pixels = max(1, _ELEMENTS // classes)
    return (triton.cdiv(labels.numel(), pixels), ), pixels, classes


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
        grid, pixels, classes = _grid_and_blocks(logits, labels)
        _log_softmax_gather_kernel[grid](
            logits, labels, out, out, labels.numel(), *logits.shape[2:],
            logits.shape[1], *logits.stride(), *labels.stride(), 0, 0, 0,
            *out.stride(), 0, BACKWARD=False, BP=pixels, BC=classes)
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
        grid, pixels, classes = _grid_and_blocks(logits, labels)
        _log_softmax_gather_kernel[grid](
            logits, labels, grad, out, labels.numel(), *logits.shape[2:],
            logits.shape[1], *logits.stride(), *labels.stride(),
            *grad.stride(), *out.stride(), BACKWARD=True, BP=pixels,
            BC=classes)
    return out
