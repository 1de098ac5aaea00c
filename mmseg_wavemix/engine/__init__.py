# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .hooks import NonFiniteLossHook, OptimizerSwitchHook

__all__ = ['NonFiniteLossHook', 'OptimizerSwitchHook']
