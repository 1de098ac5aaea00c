# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

ACTIONS = ('stop', 'skip')


class _NonFiniteLoss(Exception):
    """Raised after the backward pass of a non-finite loss, before the
    optimizer step."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at a non-finite (NaN or inf) loss, or skip that step.

    The check runs between the backward pass and the optimizer step (the
    hook guards ``runner.optim_wrapper.update_params``), so the weights are
    never updated from a non-finite loss and no checkpoint can hold such
    weights. In distributed training all ranks take the same decision.
    The loss is read on the host only after the backward pass has been
    launched, where the step waits for the device anyway (AMP's check of
    the gradients): read before it, the host would wait for the forward
    pass to end and the GPU then for the host to launch the backward.
    Under gradient accumulation (``optim_wrapper.accumulative_counts > 1``)
    it is read before the backward pass, so that skipping a step drops that
    step's gradients only, not those accumulated before it in the window.

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
        update_params, backward = wrapper.update_params, wrapper.backward
        finite = None  # the flag of the loss being updated from, on the device

        def accumulating():
            return getattr(wrapper, '_accumulative_counts', 1) > 1

        def guarded_update_params(loss, *args, **kwargs):
            nonlocal finite
            finite = torch.isfinite(loss.detach()).all().float()
            if is_distributed():
                all_reduce(finite, op='min')
            try:
                if accumulating():
                    # a non-finite backward would spoil the gradients summed
                    # in the window so far: checked before it
                    if not finite.item():
                        raise _NonFiniteLoss
                    finite = None
                return update_params(loss, *args, **kwargs)
            except _NonFiniteLoss:
                self._on_non_finite(runner, loss)
                if not accumulating():
                    wrapper.zero_grad()
            finally:
                finite = None

        def checked_backward(loss, *args, **kwargs):
            backward(loss, *args, **kwargs)
            if finite is not None and not finite.item():
                raise _NonFiniteLoss

        wrapper.update_params = guarded_update_params
        wrapper.backward = checked_backward

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
