# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .backbones import *  # noqa: F401,F403
from .data_preprocessor import SegDataPreProcessorUint8  # noqa: F401
from .decode_heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
