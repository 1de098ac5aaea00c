# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .atomic_local_backend import AtomicLocalBackend
from .hooks import NonFiniteLossHook, OptimizerSwitchHook

__all__ = ['AtomicLocalBackend', 'NonFiniteLossHook', 'OptimizerSwitchHook']
