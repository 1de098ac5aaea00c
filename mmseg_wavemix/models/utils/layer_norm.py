# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

# mmpretrain's spelling, so that blocks work with either LN2d.
DATA_FORMATS = ('channel_first', 'channel_last')


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an image-like tensor, as in ConvNeXt.

    Registered as ``'LN2d'`` in mmseg's registry, which has none
    (mmpretrain has its own ``LN2d``, which computes the same).

    Args:
        num_channels (int): Channels C.
        eps (float): Added to the variance. Default: 1e-6.
        **kwargs: Other arguments of :class:`torch.nn.LayerNorm`.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs):
        super().__init__(num_channels, eps=eps, **kwargs)
        self.num_channels = num_channels

    def forward(self, x: Tensor, data_format: str = 'channel_first') -> Tensor:
        """Normalize ``x`` of shape (N, C, H, W) (``'channel_first'``) or
        (N, H, W, C) (``'channel_last'``)."""
        if data_format not in DATA_FORMATS:
            raise ValueError(f'data_format must be one of {DATA_FORMATS}, '
                             f'got {data_format!r}')
        if data_format == 'channel_last':
            return F.layer_norm(x, self.normalized_shape, self.weight,
                                self.bias, self.eps)
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
            self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


if 'LN2d' not in MODELS.module_dict:
    MODELS.register_module('LN2d', module=LayerNorm2d)
