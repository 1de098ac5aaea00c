# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .svt import ScatteringViT
from .wavemix import WaveMix
from .wavemix_block import WaveletLevelMLP, WaveMixBlock
from .wavevit import WaveViT
from .wtconvnext import WTConvNeXt

__all__ = [
    'ScatteringViT', 'WaveMix', 'WaveMixBlock', 'WaveletLevelMLP', 'WaveViT',
    'WTConvNeXt'
]
