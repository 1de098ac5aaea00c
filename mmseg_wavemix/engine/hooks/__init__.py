# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .optimizer_switch_hook import OptimizerSwitchHook

__all__ = ['OptimizerSwitchHook']
