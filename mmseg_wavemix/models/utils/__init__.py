# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .ckpt_convert import wavemix_convert
from .wavemix_block import WaveletLevelMLP, WaveMixBlock

__all__ = ['WaveletLevelMLP', 'WaveMixBlock', 'wavemix_convert']
