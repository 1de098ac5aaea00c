# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import List

import torch.nn as nn
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
        **kwargs: Arguments of :class:`BaseDecodeHead` (``in_channels``,
            ``channels`` (= in_channels / 4 in the paper), ``num_classes``,
            ``dropout_ratio``, ``loss_decode``, ...).
    """

    def __init__(self,
                 num_upsamples: int = 2,
                 norm_cfg=None,
                 act_cfg=None,
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

    def forward(self, inputs: List[Tensor]) -> Tensor:
        x = self._transform_inputs(inputs)
        return self.cls_seg(self.upsamples(x))
