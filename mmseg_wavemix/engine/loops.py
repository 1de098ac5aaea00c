# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import itertools
import logging
import sys
from typing import Optional

import torch.nn as nn
from mmengine.dataset import InfiniteSampler
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
# The loop's own iterator type, made anew over the moved sampler.
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.utils import track_iter_progress
from mmseg.registry import LOOPS
from torch.utils.data import BatchSampler


@LOOPS.register_module()
class FastResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop``, resuming without loading the data
    it has trained on.

    On resume, mmengine's loop draws every trained iteration's batch from the
    data loader and discards it: the Cityscapes recipe resumed halfway (44,625
    iterations of 5 images at 1024x2048) would load and augment 223k images
    first, while the GPUs wait. Where the train sampler is mmengine's
    ``InfiniteSampler`` (mmseg's iteration-based configs), this loop moves
    the sampler's stream of indices past the trained batches instead, which
    takes no loading. Where that sampler was seeded from the runner's seed,
    it also takes the resumed run's seed (the runner restores it after the
    data loader is built), so the next batches hold the images that the run
    would have had without the interruption. Their random augmentations
    differ: the workers' random state is not the interrupted run's. With
    other samplers the loop advances the data loader as mmengine's does.

    The checkpoints record how far the run has drawn from the sampler's
    stream (all processes together), so a run resumed with another batch
    size or number of processes still continues the order. A run whose
    dataset changed size cannot, and the loop warns.

    Args: as mmengine's ``IterBasedTrainLoop``'s.
    """

    # the message hub's key (saved in checkpoints) for the stream's position
    STREAM_KEY = 'train_sampler_stream'

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, dataloader, *args, **kwargs)
        self._built_with_seed = runner.seed
        self._sampler = self._infinite_sampler()
        self._drawn = 0  # indices drawn from the stream by all processes
        # The runner's message hub may be an earlier runner's in this process
        # (mmengine names it by the experiment and the second it started),
        # with that run's record; a resumed checkpoint's is loaded after this.
        runner.message_hub.pop_info(self.STREAM_KEY)

    def run(self) -> nn.Module:
        """Launch training (mmengine's loop, but for advancing the data)."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._advance_data(self._iter)
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
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

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
        # the stream of all processes, this rank's share of it from there on
        sampler.indices = itertools.islice(sampler._infinite_indices(),
                                           self._drawn + sampler.rank, None,
                                           sampler.world_size)
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

    def _infinite_sampler(self) -> Optional[InfiniteSampler]:
        """The train loader's sampler, where it is an ``InfiniteSampler``
        under PyTorch's own batch sampler (one that takes ``batch_size``
        indices a batch), else None."""
        batch_sampler = self.dataloader.batch_sampler
        if type(batch_sampler) is not BatchSampler:
            return None
        sampler = batch_sampler.sampler
        return sampler if type(sampler) is InfiniteSampler else None
