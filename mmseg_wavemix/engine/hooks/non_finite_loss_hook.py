# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first non-finite (NaN or inf) loss.

    Runs before the checkpoint hook, so the broken weights of that iteration
    are never saved and the last checkpoint stays a good one to ``--resume``
    from. The error names the iteration and every loss term.
    """

    priority = 'ABOVE_NORMAL'  # before CheckpointHook (VERY_LOW)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = float(outputs['loss'])
        if math.isfinite(loss):
            return
        terms = ', '.join(f'{name}={float(value):.4g}'
                          for name, value in outputs.items()
                          if 'loss' in name)
        raise RuntimeError(
            f'non-finite loss at iteration {runner.iter + 1}: {terms}. '
            'Training stopped before saving these weights; the last '
            'checkpoint is intact. Lower the learning rate, clip gradients '
            '(optim_wrapper.clip_grad) or check the data, then --resume.')
