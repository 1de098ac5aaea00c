# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .dtcwt import DTCWT
from .haar import (DWT_BACKENDS, HaarDWT, haar_dwt, haar_dwt_packed, haar_idwt,
                   haar_lowpass)

__all__ = [
    'DTCWT', 'DWT_BACKENDS', 'HaarDWT', 'haar_dwt', 'haar_dwt_packed',
    'haar_idwt', 'haar_lowpass'
]
