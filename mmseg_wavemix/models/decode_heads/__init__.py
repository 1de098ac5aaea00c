# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .wavemix_head import WaveMixHead

__all__ = ['WaveMixHead']
