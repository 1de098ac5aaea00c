# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import contextlib
import random
from typing import Iterator, Tuple, Union

import numpy as np
import torch
from mmseg.registry import DATASETS
from torch.utils.data import Dataset


def sample_seed(seed: int, position: int) -> int:
    """The seed of the sample drawn at ``position`` of a sampler's stream
    seeded with ``seed`` (NumPy's ``SeedSequence``: unrelated seeds for
    neighbouring positions)."""
    return int(np.random.SeedSequence((seed, position)).generate_state(1)[0])


@contextlib.contextmanager
def seeded_random_state(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's CPU random generators seeded with
    ``seed`` meanwhile, and put back as they were after."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # not CUDA's (no transform's)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@DATASETS.register_module()
class SeededSampleDataset(Dataset):
    """A dataset whose samples each draw their random augmentations from a
    seed of their own.

    ``dataset[(index, seed)]`` is ``dataset.dataset[index]`` loaded with the
    global random generators (Python's, NumPy's, torch's on the CPU, which
    mmcv's and mmseg's transforms draw from) seeded with ``seed``. So a key
    gives the same augmented sample in any process or data loader worker,
    whatever was loaded before it. ``FastResumeIterBasedTrainLoop`` wraps its
    train set in this and keys each sample by its position in the sampler's
    stream: a resumed run draws the augmentations that the interrupted run
    would have drawn. A plain index loads the sample as the dataset does.

    Args:
        dataset (Dataset | dict): The dataset, or its config.
    """

    def __init__(self, dataset: Union[Dataset, dict]) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(
            dataset, dict) else dataset

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        with seeded_random_state(seed):
            return self.dataset[index]
