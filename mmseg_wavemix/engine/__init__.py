# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .atomic_local_backend import AtomicLocalBackend
from .hooks import (FastInferenceHook, FastTrainingHook, NonFiniteLossHook,
                    OptimizerSwitchHook)
from .loops import FastResumeIterBasedTrainLoop

__all__ = [
    'AtomicLocalBackend', 'FastInferenceHook', 'FastResumeIterBasedTrainLoop',
    'FastTrainingHook', 'NonFiniteLossHook', 'OptimizerSwitchHook'
]
