# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from mmseg_wavemix.datasets import SeededSampleDataset
from mmseg_wavemix.datasets.seeded_samples import sample_seed


class Augmented(Dataset):
    """Sample ``i``: ``i`` and a draw from each global generator."""
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 5

    def __getitem__(self, index):
        return index, random.random(), np.random.rand(), torch.rand(()).item()


def test_a_key_gives_the_same_sample_whatever_came_before():
    dataset = SeededSampleDataset(Augmented())
    first = dataset[(3, 7)]
    dataset[(1, 8)], dataset[4]
    np.random.rand(5), random.random(), torch.rand(3)
    assert dataset[(3, 7)] == first
    assert first[0] == 3
    assert dataset[(3, 8)][1:] != first[1:]  # each seed its draws
    assert len(dataset) == 5 and dataset.metainfo == Augmented.metainfo


def test_the_global_generators_go_on_as_without_the_sample():
    dataset = SeededSampleDataset(Augmented())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    expected = random.random(), np.random.rand(), torch.rand(()).item()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    dataset[(2, 5)]
    assert (random.random(), np.random.rand(),
            torch.rand(()).item()) == expected
    # a plain index loads as the dataset does: from the generators as they are
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    assert dataset[2] == (2, *expected)


def test_sample_seeds_differ_by_position_and_seed():
    seeds = {sample_seed(seed, position)
             for seed in range(3) for position in range(1000)}
    assert len(seeds) == 3000
    assert all(0 <= seed < 2**32 for seed in seeds)
