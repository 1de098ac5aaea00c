# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .ckpt_convert import svt_convert, wavemix_convert, wavevit_convert
from .layer_norm import LayerNorm2d
from .wtconv import WTConv2d

__all__ = [
    'LayerNorm2d', 'WTConv2d', 'svt_convert', 'wavemix_convert',
    'wavevit_convert'
]
