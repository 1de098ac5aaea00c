# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Classification with mmpretrain: ``custom_imports =
dict(imports=['mmseg_wavemix.classification'])`` registers the backbones,
the Wave-ViT/SVT head and the training hooks in mmpretrain's registries.

mmpretrain imports torchvision. Where the installed torchvision's compiled
ops cannot load (a CUDA-linked wheel next to a CPU-only torch), this first
defines the two operators torchvision registers unconditionally, so that
the import works (:func:`mmseg_wavemix.compat.make_torchvision_importable`).
Plain ``import mmseg_wavemix`` does neither.
"""
from .compat import make_torchvision_importable

make_torchvision_importable()

from mmpretrain.registry import HOOKS, MODELS  # noqa: E402

from .engine.hooks import (FastInferenceHook, NonFiniteLossHook,  # noqa: E402
                           OptimizerSwitchHook)
from .models.backbones import (ScatteringViT, WaveMix, WaveViT,  # noqa: E402
                               WTConvNeXt)
from .models.cls_heads import WaveViTClsHead  # noqa: E402,F401  (registers)

for _module in (ScatteringViT, WaveMix, WaveViT, WTConvNeXt):
    MODELS.register_module(module=_module, force=True)
for _hook in (FastInferenceHook, NonFiniteLossHook, OptimizerSwitchHook):
    HOOKS.register_module(module=_hook, force=True)
