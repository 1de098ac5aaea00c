# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""WaveMix for MMSegmentation 1.x.

Importing this package registers its modules into mmseg's registries, so a
config only needs ``custom_imports = dict(imports=['mmseg_wavemix'])``.
It also applies the fixes of :mod:`mmseg_wavemix.compat` that are safe for
any user: an allow-list of mmengine checkpoint types for torch >= 2.6, and
an importable torchvision where its compiled ops cannot load.
"""
from .compat import allow_mmengine_checkpoints, make_torchvision_importable
from .version import __version__

allow_mmengine_checkpoints()
make_torchvision_importable()

from . import engine, models, ops  # noqa: E402,F401  (registers modules)

__all__ = ['__version__']
