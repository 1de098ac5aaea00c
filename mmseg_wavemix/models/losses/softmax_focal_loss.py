# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from functools import partial
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from torch import Tensor
from torch.autograd import Variable

from mmseg_wavemix.ops.log_softmax_gather import (log_softmax_gather,
                                                  log_softmax_gather_backward)


class _LogSoftmaxGather(torch.autograd.Function):
    """``log_softmax(pred, 1)`` at ``labels``, in float32, keeping only
    ``pred`` and ``labels`` for backward: autograd would keep the float32
    log-probabilities of every class (twice the size of float16 logits;
    0.8 GB for the recipe's batch of 5 at 1024x2048). On a GPU each pass is
    one Triton kernel (:mod:`~mmseg_wavemix.ops.log_softmax_gather`).
    ``after_backward``, if given, is called when the whole backward pass has
    run."""

    @staticmethod
    def forward(ctx,
                pred: Tensor,
                labels: Tensor,
                after_backward: Optional[Callable[[], None]] = None) -> Tensor:
        ctx.after_backward = after_backward
        ctx.save_for_backward(pred, labels)
        return log_softmax_gather(pred, labels)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.after_backward is not None:
            Variable._execution_engine.queue_callback(ctx.after_backward)
        pred, labels = ctx.saved_tensors
        return log_softmax_gather_backward(grad, pred, labels), None, None


def labels_checked_after_backward(pred: Tensor) -> bool:
    """Whether the loss of ``pred`` checks its labels at the end of its
    backward pass: on a GPU in eager training. Checked in the forward pass,
    the host would wait there for the device to finish the forward pass,
    and the GPU then for the host to launch the backward."""
    return pred.is_cuda and pred.requires_grad and \
        torch.is_grad_enabled() and not torch.compiler.is_compiling() and \
        hasattr(Variable._execution_engine, 'queue_callback')


def _raise_outside(target: Tensor, num_classes: int,
                   ignore_index: int) -> None:
    """Raise the error naming a label of ``target`` outside
    ``0..num_classes - 1`` that is not ``ignore_index``."""
    outside = (target != ignore_index) & ((target < 0) |
                                          (target >= num_classes))
    raise ValueError(
        f'label {target[outside][0].item()} is outside 0..{num_classes - 1} '
        f'and is not the ignore_index {ignore_index}; check the label maps '
        'or num_classes')


@MODELS.register_module()
class SoftmaxFocalLoss(nn.Module):
    """Pixel-wise softmax focal loss (Lin et al., 2017) for segmentation.

    ``loss = -alpha_t * w_t * (1 - p_t) ** gamma * log(p_t)`` per pixel, with
    ``p_t`` the softmax probability of the true class, averaged over the
    pixels whose label is not ``ignore_index``. With ``gamma=0`` and no
    weights it equals cross-entropy averaged over valid pixels.

    mmseg's ``FocalLoss`` is a sigmoid (one-vs-all) loss; this is the softmax
    loss used by the WaveMix paper.

    A label outside ``0..C-1`` that is not ``ignore_index`` is a
    ``ValueError`` naming it: from the forward call, or on a GPU with
    gradients from the backward pass, at its end (before any optimizer step;
    see :func:`labels_checked_after_backward`).

    Args:
        gamma (float): Focusing parameter, >= 0. Default: 2.0.
        alpha (float | Sequence[float], optional): Balancing factor, one for
            all classes or one per class. Default: None (1).
        class_weight (Sequence[float], optional): Weight of each class.
            Default: None.
        reduction (str): ``'none'``, ``'mean'`` (over valid pixels) or
            ``'sum'``. Default: 'mean'.
        loss_weight (float): Weight of the loss. Default: 1.0.
        ignore_index (int): Label to ignore. Default: 255.
        loss_name (str): Name of the loss in the logs; must start with
            ``'loss_'`` to be back-propagated. Default: 'loss_focal'.
    """

    def __init__(self,
                 gamma: float = 2.0,
                 alpha: Optional[Union[float, Sequence[float]]] = None,
                 class_weight: Optional[Sequence[float]] = None,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 ignore_index: int = 255,
                 loss_name: str = 'loss_focal'):
        super().__init__()
        if gamma < 0:
            raise ValueError(f'gamma must be >= 0, got {gamma!r}')
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError("reduction must be 'none', 'mean' or 'sum', got "
                             f'{reduction!r}')
        if not loss_name.startswith('loss_'):
            raise ValueError("loss_name must start with 'loss_' to be "
                             f'optimised, got {loss_name!r}')
        self.gamma = float(gamma)
        self.alpha = alpha
        self.class_weight = class_weight
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def _per_class(self, values, num_classes: int, name: str,
                   like: Tensor) -> Tensor:
        values = like.new_tensor(values).flatten()
        if values.numel() == 1:
            return values.expand(num_classes)
        if values.numel() != num_classes:
            raise ValueError(f'{name} has {values.numel()} values but the '
                             f'prediction has {num_classes} classes')
        return values

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Logits of shape (N, C, H, W) (or (N, C)).
            target (Tensor): Labels of shape (N, H, W) (or (N, )).
            weight (Tensor, optional): Per-pixel weights, shaped like target.
            avg_factor (float, optional): Divisor of the ``'mean'``
                reduction instead of the number of valid pixels.
            reduction_override (str, optional): Overrides ``reduction``.
            ignore_index (int, optional): Overrides ``ignore_index`` (mmseg's
                decode heads pass theirs).
        """
        reduction = reduction_override or self.reduction
        ignore_index = self.ignore_index if ignore_index is None \
            else ignore_index
        num_classes = pred.shape[1]
        valid = target != ignore_index
        labels = torch.where(valid, target, torch.zeros_like(target)).long()
        outside = (labels < 0) | (labels >= num_classes)
        report = partial(_raise_outside, target, num_classes, ignore_index)
        if labels_checked_after_backward(pred):
            # the error comes from loss.backward(), before any optimizer
            # step; meanwhile no class outside the logits is gathered
            labels = labels.masked_fill(outside, 0)
            found = outside.any()

            def after_backward():
                if found.item():
                    report()
        else:
            after_backward = None
            if outside.any():  # read here: a CPU, no backward or compiled
                report()

        # fp32 for the log-probabilities: stable under autocast
        log_pt = _LogSoftmaxGather.apply(pred, labels, after_backward)
        loss = -log_pt
        if self.gamma:
            loss = loss * (1 - log_pt.exp()).clamp(min=0).pow(self.gamma)
        if self.alpha is not None:
            loss = loss * self._per_class(self.alpha, num_classes, 'alpha',
                                          loss)[labels]
        if self.class_weight is not None:
            loss = loss * self._per_class(self.class_weight, num_classes,
                                          'class_weight', loss)[labels]
        if weight is not None:
            loss = loss * weight.float()
        loss = loss * valid

        if reduction == 'mean':
            divisor = valid.sum() if avg_factor is None else avg_factor
            # on the device: no host sync for the count of valid pixels
            loss = loss.sum() / (divisor.clamp(min=1) if torch.is_tensor(
                divisor) else max(divisor, 1.))
        elif reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss
