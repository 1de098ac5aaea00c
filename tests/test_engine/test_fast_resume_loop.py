# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""FastResumeIterBasedTrainLoop: a resumed run trains on the batches the
interrupted run would have had next, without loading the trained ones."""
import itertools
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import InfiniteSampler
from mmengine.hooks import Hook
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmseg_wavemix  # noqa: F401 (registers the loop)
from mmseg_wavemix.compat import mmengine_checkpoint_loading

from .toy_runner import ToyModel

MAX_ITERS = 8
_RUNS = itertools.count()  # each runner its own message hub
RESUME_AT = 3  # 9 of 13 samples: the next batch spans two passes


def draw():
    """A number from each global random generator that augmentations and
    models draw from."""
    return random.random() + np.random.rand() + torch.rand(()).item()


class IndexDataset(Dataset):
    """Sample ``i`` is ``[i, a random augmentation]``; counts the samples
    loaded in this process."""
    metainfo = dict()

    def __init__(self, size=13):
        self.size = size
        self.loaded = 0

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        self.loaded += 1
        inputs = torch.tensor([float(index), draw()], dtype=torch.float64)
        return dict(inputs=inputs.float(), data_samples=inputs[:1].float())


class RandomToyModel(ToyModel):
    """Draws random numbers in its training step (as dropout does), and
    keeps them."""

    def __init__(self):
        super().__init__()
        self.draws = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            self.draws.append(draw())
        return super().forward(inputs, data_samples, mode)


class RecordIndicesHook(Hook):
    """Records the sample indices of each iteration's batch, and their
    augmentations."""

    def __init__(self):
        self.batches = {}
        self.augmentations = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches[runner.iter] = data_batch['inputs'][:, 0].long().tolist()
        self.augmentations[runner.iter] = data_batch['inputs'][:, 1].tolist()


def build_runner(work_dir, loop, sampler, resume_from=None, num_workers=0,
                 persistent_workers=False, seed=None, name='', batch_size=3,
                 dataset_size=13, diff_rank_seed=False,
                 model_type=RandomToyModel):
    recorder = RecordIndicesHook()
    runner = Runner(
        model=model_type(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=IndexDataset(dataset_size),
            sampler=sampler,
            batch_size=batch_size,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(type=loop, max_iters=MAX_ITERS),
        custom_hooks=[recorder],
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=RESUME_AT, by_epoch=False)),
        randomness=dict(seed=seed, diff_rank_seed=diff_rank_seed),
        load_from=resume_from,
        resume=resume_from is not None,
        default_scope='mmseg',
        experiment_name=f'fast_resume_{next(_RUNS)}_{name}')
    return runner, recorder


def train_then_resume(tmp_path, loop, sampler, resumed_options=None,
                      **kwargs):
    """The records of a run without interruption and of a run resumed from
    its checkpoint at RESUME_AT (built with ``resumed_options`` in place of
    the first run's), and the resumed runner."""
    runner, whole = build_runner(tmp_path, loop, sampler, name='whole',
                                 **kwargs)
    runner.train()
    whole.runner_model = runner.model
    resumed, part = build_runner(
        tmp_path / 'resumed', loop, sampler,
        resume_from=str(tmp_path / f'iter_{RESUME_AT}.pth'), name='resumed',
        **{**kwargs, **(resumed_options or {})})
    with mmengine_checkpoint_loading():
        resumed.train()
    return whole, part, resumed


def resumed_log(tmp_path):
    return ''.join(path.read_text()
                   for path in (tmp_path / 'resumed').glob('*/*.log'))


def stream(size, seed, count):
    """The first ``count`` indices of a shuffled ``InfiniteSampler``'s stream
    over ``size`` samples (all processes together)."""
    sampler = InfiniteSampler(range(size), shuffle=True, seed=seed)
    return list(itertools.islice(sampler._infinite_indices(), count))


def batches_of(indices, batch_size, first_iter):
    return {
        first_iter + i: indices[start:start + batch_size]
        for i, start in enumerate(range(0, len(indices), batch_size))
    }


SHUFFLED = dict(type='InfiniteSampler', shuffle=True)


def resumed_part(whole, part):
    return {i: whole[i] for i in part}


@pytest.mark.parametrize('num_workers, persistent_workers',
                         [(0, False), (2, False), (2, True)],
                         ids=['in_process', 'workers', 'persistent_workers'])
def test_resumed_run_goes_on_as_the_interrupted_run_would_have(
        tmp_path, num_workers, persistent_workers):
    """The same samples, with the same random augmentations, and the same
    random draws in the training steps."""
    whole, part, resumed = train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop', SHUFFLED, seed=0,
        num_workers=num_workers, persistent_workers=persistent_workers)
    assert sorted(part.batches) == list(range(RESUME_AT, MAX_ITERS))
    assert part.batches == resumed_part(whole.batches, part.batches)
    assert part.augmentations == resumed_part(whole.augmentations,
                                              part.augmentations)
    # drawn from the generators, not the same number each time
    augmentations = sum(whole.augmentations.values(), [])
    assert len(set(augmentations)) == len(augmentations)
    model_draws = whole.runner_model.draws
    assert resumed.model.draws == model_draws[RESUME_AT:]
    assert len(set(model_draws)) == MAX_ITERS


def test_augmentations_do_not_depend_on_the_workers(tmp_path):
    """Each sample's augmentations come from its position in the stream,
    whichever process loads it."""
    runs = []
    for num_workers in (0, 2):
        runner, recorder = build_runner(
            tmp_path / str(num_workers), 'FastResumeIterBasedTrainLoop',
            SHUFFLED, seed=0, num_workers=num_workers,
            name=str(num_workers))
        runner.train()
        runs.append(recorder)
    assert runs[0].batches == runs[1].batches
    assert runs[0].augmentations == runs[1].augmentations


def test_ranks_of_their_own_seeds_start_from_it(tmp_path, monkeypatch):
    """With randomness.diff_rank_seed on several processes, the checkpoint
    holds rank 0's generators only: no rank takes them."""
    monkeypatch.setattr('mmseg_wavemix.engine.loops.get_world_size',
                        lambda: 2)
    whole, part, resumed = train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop', SHUFFLED, seed=0,
        diff_rank_seed=True)
    assert "the checkpoint holds rank 0's" in resumed_log(tmp_path)
    assert resumed.model.draws != whole.runner_model.draws[RESUME_AT:]


def test_resumed_run_loads_no_trained_batch(tmp_path):
    *_, resumed = train_then_resume(tmp_path, 'FastResumeIterBasedTrainLoop',
                                    SHUFFLED, seed=0)
    loaded = resumed.train_dataloader.dataset.dataset.loaded
    assert loaded == (MAX_ITERS - RESUME_AT) * 3
    # mmengine's loop loads every batch again
    *_, resumed = train_then_resume(tmp_path / 'mmengine',
                                    'IterBasedTrainLoop', SHUFFLED, seed=0)
    assert resumed.train_dataloader.dataset.loaded == MAX_ITERS * 3


def test_resumed_run_takes_the_interrupted_runs_sampler_seed(tmp_path):
    """Without a configured seed each run draws its own; the runner restores
    the interrupted run's after building the sampler, and the loop gives it
    to the sampler."""
    whole, part, resumed = train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop', SHUFFLED)
    assert resumed.train_loop._built_with_seed != resumed.seed  # the case
    assert part.batches == resumed_part(whole.batches, part.batches)
    assert part.augmentations == resumed_part(whole.augmentations,
                                              part.augmentations)
    assert resumed.train_dataloader.sampler.seed == resumed.seed


def test_other_samplers_load_the_trained_batches_again(tmp_path, capsys):
    whole, part, resumed = train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop',
        dict(type='DefaultSampler', shuffle=True), seed=0)
    assert part.batches == resumed_part(whole.batches, part.batches)
    loaded = resumed.train_dataloader.dataset.dataset.loaded
    assert loaded == sum(len(batch) for batch in whole.batches.values())
    log = resumed_log(tmp_path)
    assert (f'Resuming at iteration {RESUME_AT}: the train sampler is not '
            "mmengine's InfiniteSampler") in log
    assert f'{RESUME_AT}/{RESUME_AT}, ' in capsys.readouterr().out  # progress


def test_resumed_run_with_another_batch_size_continues_the_order(tmp_path):
    whole, part, _ = train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop', SHUFFLED, seed=0,
        resumed_options=dict(batch_size=2))
    drawn = [index for i in sorted(whole.batches)
             for index in whole.batches[i]]
    assert part.batches == batches_of(
        drawn[RESUME_AT * 3:RESUME_AT * 3 + 10], 2, RESUME_AT)


def test_resumed_run_on_more_processes_continues_the_order(
        tmp_path, monkeypatch):
    """Resumed as each rank of 2 processes: the ranks share the stream from
    where the one process stopped, in turn."""
    runner, _ = build_runner(tmp_path, 'FastResumeIterBasedTrainLoop',
                             SHUFFLED, seed=0)
    runner.train()
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info',
                            lambda rank=rank: (rank, 2))
        resumed, part = build_runner(
            tmp_path / f'rank{rank}', 'FastResumeIterBasedTrainLoop',
            SHUFFLED, seed=0, name=f'rank{rank}',
            resume_from=str(tmp_path / f'iter_{RESUME_AT}.pth'))
        with mmengine_checkpoint_loading():
            resumed.train()
        assert resumed.train_dataloader.sampler.world_size == 2  # the case
        parts.append(part.batches)
    drawn = stream(13, 0, RESUME_AT * 3 + 2 * 3 * (MAX_ITERS - RESUME_AT))
    for rank, part in enumerate(parts):
        assert part == batches_of(drawn[RESUME_AT * 3 + rank::2], 3,
                                  RESUME_AT)


def test_checkpoint_without_the_streams_record_counts_iterations(tmp_path):
    """Checkpoints of mmengine's loop do not record the stream's position:
    the loop counts the iterations at this run's batch size, also where an
    earlier runner of the same name in the process left its record in their
    shared message hub."""
    runner, whole = build_runner(tmp_path, 'IterBasedTrainLoop', SHUFFLED,
                                 seed=0)
    runner.train()
    resumed, part = build_runner(
        tmp_path / 'resumed', 'FastResumeIterBasedTrainLoop', SHUFFLED,
        seed=0, resume_from=str(tmp_path / f'iter_{RESUME_AT}.pth'),
        name='resumed')
    # (mmengine names a hub by the experiment and the second it started in)
    resumed.message_hub.update_info('train_sampler_stream',
                                    dict(drawn=5, dataset_size=13))
    with mmengine_checkpoint_loading():
        resumed.train()
    assert part.batches == {i: whole.batches[i] for i in part.batches}
    assert ('the checkpoint does not record how far the run drew from the '
            f'train sampler; counting {RESUME_AT} iterations of 3 samples'
            ) in resumed_log(tmp_path)


def test_resumed_run_on_a_resized_dataset_warns(tmp_path):
    _, part, _ = train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop', SHUFFLED, seed=0,
        resumed_options=dict(dataset_size=11))
    assert ("the train dataset has 11 samples, the interrupted run's had 13"
            in resumed_log(tmp_path))
    # the new order, from the same position
    drawn = stream(11, 0, MAX_ITERS * 3)
    assert part.batches == batches_of(drawn[RESUME_AT * 3:], 3, RESUME_AT)
