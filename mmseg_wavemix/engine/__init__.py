# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .hooks import OptimizerSwitchHook

__all__ = ['OptimizerSwitchHook']
