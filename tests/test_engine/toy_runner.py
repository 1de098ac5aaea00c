# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A tiny mmengine runner setup for hook and checkpoint tests."""
import copy

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=(out - data_samples).pow(2).mean())
        return out


class ToyDataset(Dataset):
    metainfo = dict()

    def __init__(self, nan_sample=None):
        generator = torch.Generator().manual_seed(0)
        self.data = torch.randn(12, 2, generator=generator)
        self.label = self.data.sum(1, keepdim=True) + 1
        if nan_sample is not None:
            self.label[nan_sample] = float('nan')

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return dict(inputs=self.data[index], data_samples=self.label[index])


class RecordOptimizerHook(Hook):
    """Records the optimizer type used at each iteration, and the optimizer
    state the first iteration starts from."""

    def __init__(self):
        self.types = {}
        self.lrs = {}
        self.first_state = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        optimizer = runner.optim_wrapper.optimizer
        if self.first_state is None:
            self.first_state = (runner.iter, type(optimizer).__name__,
                                copy.deepcopy(optimizer.state_dict()))
        self.types[runner.iter] = type(optimizer).__name__
        self.lrs[runner.iter] = optimizer.param_groups[0]['lr']


def build_toy_runner(work_dir, max_iters=8, final_iters=3, resume_from=None,
                     checkpoint_interval=2, final_epochs=None, by_epoch=False,
                     max_epochs=None, param_scheduler=None, dataset=None,
                     extra_hooks=(), auto_scale_lr=None):
    torch.manual_seed(0)
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=max_epochs)
        sampler = dict(type='DefaultSampler', shuffle=False)
    else:
        train_cfg = dict(by_epoch=False, max_iters=max_iters)
        sampler = dict(type='InfiniteSampler', shuffle=False)
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset or ToyDataset(),
            sampler=sampler,
            batch_size=3,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        train_cfg=train_cfg,
        param_scheduler=param_scheduler,
        auto_scale_lr=auto_scale_lr,
        custom_hooks=[
            dict(
                type='OptimizerSwitchHook',
                optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                final_iters=final_iters,
                final_epochs=final_epochs),
            RecordOptimizerHook(), *extra_hooks
        ],
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook',
                interval=checkpoint_interval,
                by_epoch=by_epoch)),
        load_from=resume_from,
        resume=resume_from is not None,
        default_scope='mmseg',
        experiment_name=f'toy_{id(work_dir)}_{resume_from is not None}')


def recorder(runner):
    return next(h for h in runner.hooks if isinstance(h, RecordOptimizerHook))
