# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .wavemix import WaveMix
from .wtconvnext import WTConvNeXt

__all__ = ['WaveMix', 'WTConvNeXt']
