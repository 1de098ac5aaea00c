# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .fast_inference_hook import FastInferenceHook
from .fast_training_hook import FastTrainingHook
from .non_finite_loss_hook import NonFiniteLossHook
from .optimizer_switch_hook import OptimizerSwitchHook

__all__ = [
    'FastInferenceHook', 'FastTrainingHook', 'NonFiniteLossHook',
    'OptimizerSwitchHook'
]
