# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .atomic_local_backend import AtomicLocalBackend
from .hooks import (FastInferenceHook, FastTrainingHook, NonFiniteLossHook,
                    OptimizerSwitchHook)

__all__ = [
    'AtomicLocalBackend', 'FastInferenceHook', 'FastTrainingHook',
    'NonFiniteLossHook', 'OptimizerSwitchHook'
]
