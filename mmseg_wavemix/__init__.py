# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""WaveMix for MMSegmentation 1.x.

Importing this package registers its modules in mmseg's registries and
nothing else, so a config only needs ``custom_imports =
dict(imports=['mmseg_wavemix'])``. For classification with mmpretrain,
import :mod:`mmseg_wavemix.classification` instead.
"""
from . import datasets, engine, models, ops  # noqa: F401  (registers modules)
from .version import __version__

__all__ = ['__version__']
