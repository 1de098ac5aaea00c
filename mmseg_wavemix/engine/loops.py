# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import contextlib
import itertools
import logging
import random
import sys
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_world_size, is_main_process
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
# The loop's own iterator type, made anew over the moved sampler.
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.utils import track_iter_progress
from mmseg.registry import LOOPS
from torch.utils.data import BatchSampler

from ..datasets.seeded_samples import SeededSampleDataset, sample_seed


@LOOPS.register_module()
class FastResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop``, resuming where the interrupted run
    would have gone on, without loading the data it has trained on.

    On resume, mmengine's loop draws every trained iteration's batch from the
    data loader and discards it: the Cityscapes recipe resumed halfway (44,625
    iterations of 5 images at 1024x2048) would load and augment 223k images
    first, while the GPUs wait. Where the train sampler is mmengine's
    ``InfiniteSampler`` (mmseg's iteration-based configs), this loop moves
    the sampler's stream of indices past the trained batches instead, which
    takes no loading. Where that sampler was seeded from the runner's seed,
    it also takes the resumed run's seed (the runner restores it after the
    data loader is built), so the next batches hold the images that the run
    would have had without the interruption.

    Their random augmentations are also those of the run without the
    interruption: where the loop builds the data loader from its config,
    it wraps the train set in ``SeededSampleDataset`` and keys each sample
    by its position in the sampler's stream, from which it draws its
    augmentations (in whichever worker loads it). And each checkpoint
    records the training process's random generators after its iteration
    (Python's, NumPy's, torch's, the current CUDA device's), which a resumed
    run restores before its first iteration (dropout, drop path); what
    validations draw is not taken from the training's generators. With
    ``randomness.diff_rank_seed=True`` on several processes, only rank 0's
    are recorded, and none are restored.

    The checkpoints record how far the run has drawn from the sampler's
    stream (all processes together), so a run resumed with another batch
    size or number of processes still continues the order. A run whose
    dataset changed size cannot, and the loop warns. With other samplers
    the loop advances the data loader as mmengine's does.

    Args: as mmengine's ``IterBasedTrainLoop``'s.
    """

    # the message hub's key (saved in checkpoints) for the stream's position
    STREAM_KEY = 'train_sampler_stream'
    # ... and for the random generators' states after an iteration
    RANDOM_KEY = 'train_random_states'

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        if isinstance(dataloader, dict):
            # built here (as mmengine's loop builds it), to key the stream
            # before the loop's iterator draws from it
            dataloader = runner.build_dataloader(
                dict(dataloader, dataset=dict(
                    type=SeededSampleDataset, dataset=dataloader['dataset'])),
                seed=runner.seed,
                diff_rank_seed=runner._randomness_cfg.get(
                    'diff_rank_seed', False))
        self._sampler = infinite_sampler(dataloader)
        self._keyed = isinstance(dataloader.dataset, SeededSampleDataset)
        if self._sampler is not None:
            self._sampler.indices = self._stream()
        super().__init__(runner, dataloader, *args, **kwargs)
        self._built_with_seed = runner.seed
        self._drawn = 0  # indices drawn from the stream by all processes
        # The runner's message hub may be an earlier runner's in this process
        # (mmengine names it by the experiment and the second it started),
        # with that run's records; a resumed checkpoint's are loaded after.
        runner.message_hub.pop_info(self.STREAM_KEY)
        runner.message_hub.pop_info(self.RANDOM_KEY)

    def run(self) -> nn.Module:
        """Launch training (mmengine's loop, but for advancing the data)."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._advance_data(self._iter)
            self._restore_random_states()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self._count_drawn()
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                # what validation draws (a data loader's seed for its
                # workers) is not the training's: it goes on as without it
                with preserved_random_states():
                    self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_iter(self, data_batch: Sequence[dict]) -> None:
        """Iterates one batch (mmengine's), recording the random generators'
        states for a checkpoint of this iteration (its hooks save it)."""
        self.runner.call_hook(
            'before_train_iter', batch_idx=self._iter, data_batch=data_batch)
        outputs = self.runner.model.train_step(
            data_batch, optim_wrapper=self.runner.optim_wrapper)
        self.runner.message_hub.update_info(self.RANDOM_KEY, random_states())
        self.runner.call_hook(
            'after_train_iter',
            batch_idx=self._iter,
            data_batch=data_batch,
            outputs=outputs)
        self._iter += 1

    def _restore_random_states(self) -> None:
        states = self.runner.message_hub.get_info(self.RANDOM_KEY)
        if states is None:  # a checkpoint of mmengine's loop
            return
        if get_world_size() > 1 and self.runner._randomness_cfg.get(
                'diff_rank_seed', False):
            print_log(
                'The random generators start from the seed: the checkpoint '
                "holds rank 0's, and each rank had its own "
                '(randomness.diff_rank_seed).', logger='current')
            return
        set_random_states(states)

    def _stream(self, start: int = 0):
        """This rank's share of the sampler's stream from position ``start``
        (all processes together): indices, or ``(index, seed)`` keys where
        the train set is a ``SeededSampleDataset``."""
        sampler = self._sampler
        indices = itertools.islice(sampler._infinite_indices(),
                                   start + sampler.rank, None,
                                   sampler.world_size)
        if not self._keyed:
            return indices
        seed = sampler.seed
        positions = itertools.count(start + sampler.rank, sampler.world_size)
        return zip(indices, (sample_seed(seed, p) for p in positions))

    def _drawn_per_iter(self) -> int:
        """The indices one iteration draws from the stream, all processes
        together."""
        return self.dataloader.batch_sampler.batch_size * \
            self._sampler.world_size

    def _count_drawn(self) -> None:
        """Records the stream's position after drawing a batch, for the
        checkpoints (the message hub's state is saved in them)."""
        if self._sampler is None:
            return
        self._drawn += self._drawn_per_iter()
        self.runner.message_hub.update_info(
            self.STREAM_KEY,
            dict(drawn=self._drawn, dataset_size=self._sampler.size))

    def _advance_data(self, iters: int) -> None:
        """Makes the next batch the one of iteration ``iters``."""
        sampler = self._sampler
        if sampler is None:
            print_log(
                f'Resuming at iteration {iters}: the train sampler is not '
                "mmengine's InfiniteSampler, so the data loader loads the "
                f'{iters} trained batches again to skip them.',
                logger='current', level=logging.WARNING)
            steps = range(iters)
            if is_main_process():  # to the current stdout, not the import's
                steps = track_iter_progress(steps, file=sys.stdout)
            for _ in steps:
                next(self.dataloader_iterator)
            return
        # seeded from the runner's seed when built: the runner has since
        # restored the interrupted run's, which that run's sampler had
        if (sampler.seed == self._built_with_seed
                and self.runner.seed != sampler.seed):
            sampler.seed = self.runner.seed
        stream = self.runner.message_hub.get_info(self.STREAM_KEY)
        if stream is None:  # a checkpoint of mmengine's loop
            self._drawn = iters * self._drawn_per_iter()
            print_log(
                f'Resuming at iteration {iters}: the checkpoint does not '
                'record how far the run drew from the train sampler; '
                f'counting {iters} iterations of '
                f'{self.dataloader.batch_sampler.batch_size} samples on '
                f'{sampler.world_size} process(es).',
                logger='current')
        else:
            self._drawn = stream['drawn']
            if stream['dataset_size'] != sampler.size:
                print_log(
                    f'Resuming at iteration {iters}: the train dataset has '
                    f"{sampler.size} samples, the interrupted run's had "
                    f"{stream['dataset_size']}, so the order of samples "
                    "does not continue the interrupted run's: the resumed "
                    'run draws from the new order at the same position.',
                    logger='current', level=logging.WARNING)
        sampler.indices = self._stream(self._drawn)
        # A new pass of the data loader takes its indices from the moved
        # stream. The batches that the workers made ahead from the old one
        # are dropped: the old pass's workers stop with its iterator, first
        # (persistent workers are kept and told to start the new pass).
        del self.dataloader_iterator
        self.dataloader_iterator = _InfiniteDataloaderIterator(
            self.dataloader)
        print_log(
            f'Resuming at iteration {iters}: the train sampler skipped the '
            f'{self._drawn} indices of the trained batches (all processes '
            f'together; seed {sampler.seed}); no data was loaded for them.',
            logger='current')


def infinite_sampler(dataloader) -> Optional[InfiniteSampler]:
    """The loader's sampler, where it is an ``InfiniteSampler`` under
    PyTorch's own batch sampler (one that takes ``batch_size`` indices a
    batch), else None."""
    batch_sampler = dataloader.batch_sampler
    if type(batch_sampler) is not BatchSampler:
        return None
    sampler = batch_sampler.sampler
    return sampler if type(sampler) is InfiniteSampler else None


def random_states() -> dict:
    """The states of the training process's random generators, as
    checkpoints hold them (plain types and tensors)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    states = dict(
        python=random.getstate(),
        numpy=(name, keys.tolist(), position, has_gauss, gauss),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def set_random_states(states: dict) -> None:
    """Puts back what :func:`random_states` returned."""
    random.setstate(states['python'])
    name, keys, *rest = states['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    # mmengine's resume maps a checkpoint's tensors to the GPU; the
    # generators take their states as CPU tensors only
    torch.set_rng_state(states['torch'].cpu())
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'].cpu())


@contextlib.contextmanager
def preserved_random_states() -> Iterator[None]:
    """The random generators put back after the block as they were."""
    states = random_states()
    try:
        yield
    finally:
        set_random_states(states)
