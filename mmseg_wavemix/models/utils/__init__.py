# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .ckpt_convert import wavemix_convert
from .fuse_norm import fuse_conv_bn, fuse_norm_layers
from .fused_conv_gelu import FusedConvGELU, fuse_conv_gelu
from .layer_norm import LayerNorm2d
from .wavemix_block import WaveletLevelMLP, WaveMixBlock
from .wtconv import WTConv2d

__all__ = [
    'FusedConvGELU', 'LayerNorm2d', 'WaveletLevelMLP', 'WaveMixBlock',
    'WTConv2d', 'fuse_conv_bn', 'fuse_conv_gelu', 'fuse_norm_layers',
    'wavemix_convert'
]
