# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from mmseg_wavemix.ops.accuracy import correct_and_labelled


@MODELS.register_module()
class WaveMixHead(BaseDecodeHead):
    """Decode head of WaveMix for segmentation (arXiv 2205.14375, Fig. 1).

    Two transposed convolutions (kernel 4, stride 2, padding 1) upsample the
    backbone features 4x, ``in_channels -> in_channels / 2 -> channels``,
    then ``conv_seg`` (1x1) classifies. With the paper's strided stem of
    stride 2 the logits are at the input resolution.

    As in the paper there is no norm or activation between the layers unless
    ``norm_cfg`` / ``act_cfg`` are given, and the paper uses no dropout before
    the classifier: set ``dropout_ratio=0``.

    Args:
        num_upsamples (int): Number of 2x upsampling layers. Default: 2.
        norm_cfg (dict, optional): Norm after each upsampling. Default: None.
        act_cfg (dict, optional): Activation after each upsampling.
            Default: None.
        fold_classifier (bool): Run the last upsampling and ``conv_seg`` as
            one transposed convolution straight to the classes, its weight
            the product of theirs made on each call, where that applies
            (:attr:`can_fold_classifier`) and saves FLOPs (fewer classes than
            ``channels``). Autograd through the product trains both layers as
            if they ran one after the other (same parameters, gradients and
            checkpoints, up to float rounding), without the
            ``channels``-wide features at the output resolution: for
            Cityscapes (19 classes, 64 channels) 3.5x fewer FLOPs and less
            memory in the largest layer. The attribute says whether it
            applies. Default: True.
        memory_efficient (bool): In training under AMP, keep the head's
            input, not the last upsampling's (the head's largest tensor: 0.67
            GB for the recipe's batch of 5 at 1024x2048), and recompute that
            in backward
            (:func:`~mmseg_wavemix.models.accel.
            conv_transpose_of_recomputed`; a transposed convolution more per
            step). It applies where the classifier is folded (its layers
            before are then plain transposed convolutions, which recompute
            exactly). Default: False.
        **kwargs: Arguments of :class:`BaseDecodeHead` (``in_channels``,
            ``channels`` (= in_channels / 4 in the paper), ``num_classes``,
            ``dropout_ratio``, ``loss_decode``, ...).
    """

    def __init__(self,
                 num_upsamples: int = 2,
                 norm_cfg=None,
                 act_cfg=None,
                 fold_classifier: bool = True,
                 memory_efficient: bool = False,
                 **kwargs):
        super().__init__(
            norm_cfg=norm_cfg, act_cfg=act_cfg, **kwargs)
        if not isinstance(num_upsamples, int) or num_upsamples < 1:
            raise ValueError('num_upsamples must be an integer >= 1, got '
                             f'{num_upsamples!r}')
        # Halve the channels at each step and end at `channels`.
        dims = [self.in_channels // 2**i for i in range(num_upsamples)]
        dims.append(self.channels)
        self.upsamples = nn.Sequential(*(
            ConvModule(
                dims[i],
                dims[i + 1],
                kernel_size=4,
                stride=2,
                padding=1,
                conv_cfg=dict(type='deconv'),
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg) for i in range(num_upsamples)))
        self.fold_classifier = fold_classifier and self.fold_saves_flops
        self.memory_efficient = memory_efficient

    def forward(self, inputs: List[Tensor]) -> Tensor:
        x = self._transform_inputs(inputs)
        if self.fold_classifier:
            deconv = self.upsamples[-1].conv
            weight, bias = folded_deconv_params(deconv, self.conv_seg)
            features = self.upsamples[:-1]
            if self.memory_efficient and len(features) and \
                    torch.is_grad_enabled() and \
                    torch.is_autocast_enabled(x.device.type) and \
                    not torch.jit.is_tracing():
                # imported here: the speed paths build on the plain model
                from ..accel import conv_transpose_of_recomputed
                return conv_transpose_of_recomputed(features, x, weight,
                                                    bias, deconv)
            return F.conv_transpose2d(
                features(x), weight, bias, deconv.stride, deconv.padding,
                deconv.output_padding, 1, deconv.dilation)
        return self.cls_seg(self.upsamples(x))

    def loss_by_feat(self, seg_logits: Tensor,
                     batch_data_samples: SampleList) -> dict:
        """mmseg's losses and ``acc_seg``, computed without two full-size
        passes it makes: the logits are resized only where their size is not
        the labels' (the paper's head gives the input size), and the
        accuracy comes from an argmax (mmseg's top-k over the class axis and
        its boolean indexing took 5% of the recipe's training step on an
        H100). The same values (tests/test_models)."""
        seg_label = self._stack_batch_gt(batch_data_samples)
        if seg_logits.shape[2:] != seg_label.shape[2:]:
            seg_logits = resize(
                seg_logits,
                size=seg_label.shape[2:],
                mode='bilinear',
                align_corners=self.align_corners)
        seg_weight = None if self.sampler is None else \
            self.sampler.sample(seg_logits, seg_label)
        seg_label = seg_label.squeeze(1)
        losses_decode = self.loss_decode if isinstance(
            self.loss_decode, nn.ModuleList) else [self.loss_decode]
        loss = dict()
        for loss_decode in losses_decode:
            value = loss_decode(
                seg_logits,
                seg_label,
                weight=seg_weight,
                ignore_index=self.ignore_index)
            name = loss_decode.loss_name
            loss[name] = loss[name] + value if name in loss else value
        loss['acc_seg'] = pixel_accuracy(seg_logits, seg_label,
                                         self.ignore_index)
        return loss

    @property
    def can_fold_classifier(self) -> bool:
        """Whether ``conv_seg`` can be folded into the last transposed
        convolution: it is a plain 1x1 convolution, and no norm, activation
        or dropout sits between the two."""
        last = self.upsamples[-1]
        return type(self.conv_seg) is nn.Conv2d and \
            not (last.with_norm or last.with_activation
                 or self.dropout is not None) and \
            last.conv.groups == 1 and self.conv_seg.groups == 1 and \
            self.conv_seg.kernel_size == (1, 1)

    @property
    def fold_saves_flops(self) -> bool:
        """Whether the classifier can be folded and has fewer classes than
        ``channels``, so that folding it saves FLOPs."""
        return self.can_fold_classifier and self.num_classes < self.channels


def pixel_accuracy(seg_logits: Tensor, seg_label: Tensor,
                   ignore_index: int) -> Tensor:
    """mmseg's top-1 ``accuracy`` (percent of the labelled pixels whose
    largest logit is their class, shape (1, )) from an argmax (on a GPU one
    Triton pass, :func:`~mmseg_wavemix.ops.accuracy.correct_and_labelled`),
    without a host sync."""
    correct, labelled = correct_and_labelled(seg_logits, seg_label,
                                             ignore_index)
    eps = torch.finfo(torch.float32).eps
    return ((correct.float() + eps) * 100 /
            (labelled.float() + eps)).reshape(1)


def folded_deconv_params(deconv: nn.ConvTranspose2d,
                         cls: nn.Conv2d) -> Tuple[Tensor, Tensor]:
    """Weight and bias of ``cls(deconv(x))`` as one transposed convolution
    (``cls`` a 1x1 convolution), differentiable in both layers' parameters."""
    cls_weight = cls.weight.flatten(1)  # (classes, channels)
    # weight (in, out, kh, kw): the classes mix the deconv's output channels
    weight = torch.einsum('iokl,co->ickl', deconv.weight, cls_weight)
    bias = cls.bias if cls.bias is not None else \
        cls_weight.new_zeros(cls_weight.shape[0])
    if deconv.bias is not None:
        bias = bias + cls_weight @ deconv.bias
    return weight, bias
