# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""mmpretrain heads (imported by :mod:`mmseg_wavemix.classification`, as they
need mmpretrain)."""
from .wavevit_cls_head import WaveViTClsHead

__all__ = ['WaveViTClsHead']
