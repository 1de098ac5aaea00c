# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .wavemix import WaveMix

__all__ = ['WaveMix']
