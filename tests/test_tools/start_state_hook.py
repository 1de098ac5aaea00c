# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A test-only hook (loaded with custom_imports) that saves the state a run
starts from, after any --resume, to compare it with the checkpoint."""
import copy
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveStartStateHook(Hook):

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        optimizer = runner.optim_wrapper.optimizer
        state = dict(
            iter=runner.iter,
            optimizer_type=type(optimizer).__name__,
            optimizer=copy.deepcopy(optimizer.state_dict()),
            lr=optimizer.param_groups[0]['lr'],
            best_score=runner.message_hub.get_info('best_score'),
            state_dict={
                k: v.detach().clone()
                for k, v in runner.model.state_dict().items()
            })
        torch.save(state, osp.join(runner.work_dir,
                                   f'start_state_{runner.iter}.pth'))
