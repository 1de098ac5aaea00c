# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .transforms import PackSegInputsUint8

__all__ = ['PackSegInputsUint8']
