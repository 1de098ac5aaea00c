# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .atomic_local_backend import AtomicLocalBackend
from .hooks import FastInferenceHook, NonFiniteLossHook, OptimizerSwitchHook

__all__ = [
    'AtomicLocalBackend', 'FastInferenceHook', 'NonFiniteLossHook',
    'OptimizerSwitchHook'
]
