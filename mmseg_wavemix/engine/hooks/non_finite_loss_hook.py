# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

ACTIONS = ('stop', 'skip')


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at a non-finite (NaN or inf) loss, or skip that step.

    The check runs before the backward pass and the optimizer step (the hook
    guards ``runner.optim_wrapper.update_params``), so the weights are never
    updated from a non-finite loss and no checkpoint can hold such weights.
    In distributed training all ranks take the same decision.

    Args:
        action (str): ``'stop'`` raises an error naming the iteration and the
            loss; the last checkpoint is a good one to ``--resume`` from.
            ``'skip'`` drops the step with a warning and goes on.
            Default: 'stop'.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, action: str = 'stop'):
        if action not in ACTIONS:
            raise ValueError(f'action must be one of {ACTIONS}, got '
                             f'{action!r}')
        self.action = action
        self.skipped = 0

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        update_params = wrapper.update_params

        def guarded_update_params(loss, *args, **kwargs):
            finite = torch.isfinite(loss.detach()).all().float()
            if is_distributed():
                all_reduce(finite, op='min')
            if finite.item():
                return update_params(loss, *args, **kwargs)
            self._on_non_finite(runner, loss)
            wrapper.zero_grad()

        wrapper.update_params = guarded_update_params

    def _on_non_finite(self, runner, loss) -> None:
        where = (f'non-finite loss {loss.detach().float().item():.4g} at '
                 f'iteration {runner.iter + 1}')
        if self.action == 'stop':
            raise RuntimeError(
                f'{where} (on this or another rank). Training stopped before '
                'updating the weights; the last checkpoint is intact. Lower '
                'the learning rate, clip gradients (optim_wrapper.clip_grad) '
                'or check the data, then --resume.')
        self.skipped += 1
        runner.logger.warning(
            f'NonFiniteLossHook: skipped the step of the {where} '
            f'({self.skipped} skipped so far)')
