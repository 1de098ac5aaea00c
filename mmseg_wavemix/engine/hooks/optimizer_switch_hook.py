# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import copy
from typing import Optional

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class OptimizerSwitchHook(Hook):
    """Switch to another optimizer for the final part of training.

    The WaveMix recipe trains with AdamW and finishes with SGD. At the switch
    the optimizer inside ``runner.optim_wrapper`` is rebuilt from
    ``optimizer`` with the config's ``paramwise_cfg``; the wrapper itself
    (gradient clipping, AMP loss scaler, accumulation) is kept. Where the
    runner scales the learning rates to its total batch (``auto_scale_lr``
    on: ``tools/train.py --auto-scale-lr``), which it does for the first
    optimizer only, the new one's are scaled alike. The state is saved in
    checkpoints, so ``--resume`` continues with the right optimizer and its
    state on either side of the switch.

    Args:
        optimizer (dict): Config of the optimizer to switch to, e.g.
            ``dict(type='SGD', lr=1e-3, momentum=0.9)``.
        final_iters (int, optional): Switch for the final ``final_iters``
            iterations. Default: None.
        final_epochs (int, optional): Switch for the final ``final_epochs``
            epochs (epoch-based training). Default: None.
    """

    priority = 'ABOVE_NORMAL'  # before the param scheduler and the logger

    def __init__(self,
                 optimizer: dict,
                 final_iters: Optional[int] = None,
                 final_epochs: Optional[int] = None):
        if (final_iters is None) == (final_epochs is None):
            raise ValueError('give exactly one of final_iters and '
                             'final_epochs')
        final = final_iters if final_epochs is None else final_epochs
        if not isinstance(final, int) or final < 0:
            raise ValueError('final_iters / final_epochs must be an integer '
                             f'>= 0, got {final!r}')
        if not isinstance(optimizer, dict) or 'type' not in optimizer:
            raise ValueError('optimizer must be an optimizer config with a '
                             f'"type", got {optimizer!r}')
        self.optimizer_cfg = copy.deepcopy(optimizer)
        self.final_iters = final_iters
        self.final_epochs = final_epochs
        self.switched = False

    def _switch_point(self, runner) -> int:
        if self.final_iters is not None:
            return max(runner.max_iters - self.final_iters, 0)
        return max(runner.max_epochs - self.final_epochs, 0)

    def _build(self, runner):
        """The optimizer to switch to, for the runner's model (with the
        config's ``paramwise_cfg``), its learning rates scaled as the
        runner's ``auto_scale_lr`` scaled the first optimizer's."""
        wrapper_cfg = copy.deepcopy(runner.cfg.get('optim_wrapper', {}))
        new_cfg = dict(
            type='OptimWrapper',
            optimizer=copy.deepcopy(self.optimizer_cfg),
            paramwise_cfg=wrapper_cfg.get('paramwise_cfg'))
        optimizer = build_optim_wrapper(runner.model, new_cfg).optimizer
        scale = self._lr_scale(runner)
        for group in optimizer.param_groups:
            group['lr'] *= scale
        return optimizer

    @staticmethod
    def _lr_scale(runner) -> float:
        """mmengine's ``auto_scale_lr`` factor (1 where it is off): the
        run's total batch over the one the learning rates are for."""
        auto_scale_lr = getattr(runner, 'auto_scale_lr', None) or {}
        if not auto_scale_lr.get('enable', False):
            return 1.
        return runner.world_size * runner.train_dataloader.batch_size / \
            auto_scale_lr['base_batch_size']

    def _switch(self, runner, reason: str) -> None:
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, OptimWrapper):
            raise TypeError('OptimizerSwitchHook supports a single '
                            f'OptimWrapper, got {type(wrapper).__name__}')
        old_name = type(wrapper.optimizer).__name__
        new_optimizer = self._build(runner)
        wrapper.optimizer = new_optimizer
        # Param schedulers step the optimizer they were built with, relative
        # to its initial values: point them at the new one and its values.
        schedulers = runner.param_schedulers or []
        if isinstance(schedulers, dict):
            schedulers = [s for group in schedulers.values() for s in group]
        for scheduler in schedulers:
            key = f'initial_{scheduler.param_name}'
            for group in new_optimizer.param_groups:
                group.setdefault(key, group[scheduler.param_name])
            scheduler.optimizer = new_optimizer
            scheduler.base_values = [
                group[key] for group in new_optimizer.param_groups
            ]
        self.switched = True
        scale = self._lr_scale(runner)
        runner.logger.info(
            f'OptimizerSwitchHook: switched the optimizer from {old_name} to '
            f'{type(new_optimizer).__name__} {reason}' +
            (f' (learning rate scaled by {scale:g}, auto_scale_lr)'
             if scale != 1 else ''))

    def before_train(self, runner) -> None:
        if not self.switched:
            # built once now, not first at the switch (two thirds into the
            # recipe's training): a config that cannot build (an argument
            # this PyTorch lacks, say) fails before any training
            try:
                self._build(runner)
            except Exception as error:  # noqa: BLE001
                raise ValueError(
                    'OptimizerSwitchHook: the optimizer to switch to, '
                    f'{self.optimizer_cfg}, cannot be built for this model: '
                    f'{type(error).__name__}: {error}; fix it in the '
                    'config') from error
        total = runner.max_iters if self.final_iters is not None \
            else runner.max_epochs
        final = self.final_iters if self.final_iters is not None \
            else self.final_epochs
        if final > total:
            runner.logger.warning(
                f'OptimizerSwitchHook: the final {final} '
                f'{"iterations" if self.final_iters is not None else "epochs"}'
                f' exceed the schedule ({total}); switching at the start')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if not self.switched and self.final_iters is not None and \
                runner.iter >= self._switch_point(runner):
            self._switch(runner, f'at iteration {runner.iter}')

    def before_train_epoch(self, runner) -> None:
        if not self.switched and self.final_epochs is not None and \
                runner.epoch >= self._switch_point(runner):
            self._switch(runner, f'at epoch {runner.epoch}')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['optimizer_switched'] = self.switched

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runs before the runner loads the optimizer state on --resume: build
        # the optimizer that state belongs to first.
        switched = checkpoint.get('meta', {}).get('optimizer_switched', False)
        if switched and not self.switched and \
                isinstance(runner.optim_wrapper, OptimWrapper):
            self._switch(runner, 'to resume from a checkpoint saved after '
                         'the switch')
