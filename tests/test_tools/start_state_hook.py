# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Test-only hooks (loaded with custom_imports): one saves the state a run
starts from, after any --resume, to compare it with the checkpoint; one
records the images of each iteration's batch and their flips; one kills the
run at a known point."""
import copy
import json
import os
import os.path as osp
import signal

import torch
from mmengine.dist import get_rank
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


@HOOKS.register_module()
class RecordBatchesHook(Hook):
    """Appends each iteration's image file names, and whether each was
    flipped, to ``batches_rank{rank}.jsonl`` in the work directory."""

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        samples = data_batch['data_samples']
        images = [osp.basename(sample.img_path) for sample in samples]
        flips = [sample.metainfo.get('flip') for sample in samples]
        path = osp.join(runner.work_dir, f'batches_rank{get_rank()}.jsonl')
        with open(path, 'a') as file:
            file.write(json.dumps(
                dict(iter=runner.iter, images=images, flips=flips)) + '\n')


@HOOKS.register_module()
class KillAfterCheckpointHook(Hook):
    """SIGKILLs the training process right after the checkpoint of iteration
    ``kill_after`` is saved (it runs after CheckpointHook)."""

    priority = 'LOWEST'

    def __init__(self, kill_after: int):
        self.kill_after = kill_after

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
