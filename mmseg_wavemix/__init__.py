# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""WaveMix for MMSegmentation 1.x.

Importing this package registers its modules into mmseg's registries, so a
config only needs ``custom_imports = dict(imports=['mmseg_wavemix'])``.
It also makes torchvision importable where its compiled ops cannot load
(see :mod:`mmseg_wavemix.compat`), so that mmpretrain can be imported.
"""
from .compat import make_torchvision_importable
from .version import __version__

make_torchvision_importable()

from . import engine, models, ops  # noqa: E402,F401  (registers modules)

__all__ = ['__version__']
