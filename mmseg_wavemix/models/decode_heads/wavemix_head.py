# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor


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
        fold_classifier (bool): Where nothing separates the last upsampling
            from ``conv_seg`` (see :attr:`can_fuse_classifier`) and there are
            fewer classes than ``channels``, run the two as one transposed
            convolution straight to the classes, its weight the product of
            theirs made on each call. Autograd through that product trains
            both layers as if they ran one after the other (same parameters,
            same gradients up to float rounding, same checkpoints), without
            the ``channels``-wide features at the output resolution: for
            Cityscapes (19 classes, 64 channels) 3.5x fewer FLOPs and less
            memory in the largest layer. Default: True.
        **kwargs: Arguments of :class:`BaseDecodeHead` (``in_channels``,
            ``channels`` (= in_channels / 4 in the paper), ``num_classes``,
            ``dropout_ratio``, ``loss_decode``, ...).
    """

    def __init__(self,
                 num_upsamples: int = 2,
                 norm_cfg=None,
                 act_cfg=None,
                 fold_classifier: bool = True,
                 **kwargs):
        super().__init__(
            norm_cfg=norm_cfg, act_cfg=act_cfg, **kwargs)
        if not isinstance(num_upsamples, int) or num_upsamples < 1:
            raise ValueError('num_upsamples must be an integer >= 1, got '
                             f'{num_upsamples!r}')
        self.fold_classifier = fold_classifier
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

    def forward(self, inputs: List[Tensor]) -> Tensor:
        x = self._transform_inputs(inputs)
        if self.folds_classifier:
            return self._folded_classifier(self.upsamples[:-1](x))
        return self.cls_seg(self.upsamples(x))

    @property
    def folds_classifier(self) -> bool:
        """Whether :meth:`forward` runs the last upsampling and ``conv_seg``
        as one transposed convolution (``fold_classifier``)."""
        return self.fold_classifier and self.classifier_fold_saves_flops

    @property
    def classifier_fold_saves_flops(self) -> bool:
        """Whether ``conv_seg`` can be folded (see
        :attr:`can_fuse_classifier`) and has fewer outputs than inputs, so
        that folding it saves FLOPs."""
        return self.can_fuse_classifier and \
            self.conv_seg.out_channels < self.conv_seg.in_channels

    def _folded_classifier(self, x: Tensor) -> Tensor:
        deconv, cls = self.upsamples[-1].conv, self.conv_seg
        weight, bias = _folded_deconv_params(deconv, cls)
        return F.conv_transpose2d(x, weight, bias, deconv.stride,
                                  deconv.padding, deconv.output_padding, 1,
                                  deconv.dilation)

    @property
    def can_fuse_classifier(self) -> bool:
        """Whether :meth:`fuse_classifier` applies: ``conv_seg`` not folded
        yet, and nothing but the linear layers themselves between the last
        upsampling and ``conv_seg``."""
        last = self.upsamples[-1]
        return isinstance(self.conv_seg, nn.Conv2d) and \
            not (last.with_norm or last.with_activation
                 or self.dropout is not None) and \
            last.conv.groups == 1 and self.conv_seg.groups == 1 and \
            self.conv_seg.kernel_size == (1, 1)

    @torch.no_grad()
    def fuse_classifier(self) -> 'WaveMixHead':
        """Fold ``conv_seg`` into the last transposed convolution, for
        inference.

        In the paper's head nothing separates the two (no norm, activation or
        dropout), so together they are one transposed convolution straight
        to ``num_classes`` channels and the ``channels``-wide features at the
        output resolution are never made. With fewer classes than channels
        this saves FLOPs in the largest layers of the model (Cityscapes, 19
        classes, 64 channels: 3.5x fewer there). The logits are the same up
        to float rounding. With ``fold_classifier`` :meth:`forward` already
        runs the two this way; this makes it permanent (no weight product per
        call, one layer fewer to export). It cannot be undone;
        ``tools/test.py --fast`` applies it where it saves FLOPs.

        Returns:
            WaveMixHead: This head, ``conv_seg`` replaced by an identity.

        Raises:
            RuntimeError: If the head has a norm, activation or dropout there
                (see :attr:`can_fuse_classifier`); nothing is changed.
        """
        if isinstance(self.conv_seg, nn.Identity):
            return self
        if not self.can_fuse_classifier:
            raise RuntimeError(
                'fuse_classifier needs nothing between the last upsampling '
                'and conv_seg; this head has a norm, activation or dropout '
                '(norm_cfg/act_cfg None and dropout_ratio=0 make it foldable)')
        deconv, cls = self.upsamples[-1].conv, self.conv_seg
        weight, bias = _folded_deconv_params(deconv, cls)
        fused = type(deconv)(
            deconv.in_channels,
            cls.out_channels,
            deconv.kernel_size,
            stride=deconv.stride,
            padding=deconv.padding,
            output_padding=deconv.output_padding,
            dilation=deconv.dilation,
            device=deconv.weight.device,
            dtype=deconv.weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.upsamples[-1].conv = fused
        self.conv_seg = nn.Identity()
        return self


def _folded_deconv_params(deconv: nn.ConvTranspose2d, cls: nn.Conv2d):
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
