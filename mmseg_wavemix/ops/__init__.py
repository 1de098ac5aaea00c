# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .haar_dwt import (DWT_BACKENDS, HaarDWT, haar_dwt, haar_dwt_packed,
                       haar_idwt, haar_lowpass, haar_wavedec2, haar_waverec2)

__all__ = [
    'DWT_BACKENDS', 'HaarDWT', 'haar_dwt', 'haar_dwt_packed', 'haar_idwt',
    'haar_lowpass', 'haar_wavedec2', 'haar_waverec2'
]
