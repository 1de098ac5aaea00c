# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .haar import (DWT_BACKENDS, HaarDWT, haar_dwt, haar_dwt_packed, haar_idwt,
                   haar_lowpass)

__all__ = [
    'DWT_BACKENDS', 'HaarDWT', 'haar_dwt', 'haar_dwt_packed', 'haar_idwt',
    'haar_lowpass'
]
