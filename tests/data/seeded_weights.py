# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Deterministic weights from names and shapes alone, so that a parity
fixture stores no weights: the script that makes it (in the authors'
environment) and the test that reads it (in ours) build the same tensors.
Plain torch only: both environments import this file."""
import math
from typing import Dict, Sequence

import torch


def seeded_state_dict(shapes: Dict[str, Sequence[int]],
                      seed: int = 0) -> Dict[str, torch.Tensor]:
    """A state dict for ``shapes`` (key -> shape), each tensor from its own
    generator (seeded by ``seed`` and the key's rank in sorted order), scaled
    so that activations stay of order one: weights ~ N(0, 1 / fan_in), norm
    scales 1 +- 0.1, biases and running means small, running variances in
    [0.5, 1.5]; SVT's spectral weights alike (its low-pass gate 1 +- 0.1)."""
    state_dict = {}
    for rank, key in enumerate(sorted(shapes)):
        shape = tuple(shapes[key])
        generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)
        name = key.rsplit('.', 1)[-1]
        if name == 'num_batches_tracked':
            tensor = torch.zeros(shape, dtype=torch.long)
        elif name == 'running_var':
            tensor = torch.rand(shape, generator=generator) + 0.5
        elif name in ('running_mean', 'bias'):
            tensor = torch.randn(shape, generator=generator) * 0.05
        elif name == 'complex_weight_ll':  # SVT's low-pass gate
            tensor = 1 + torch.randn(shape, generator=generator) * 0.1
        elif name.startswith('complex_weight_lh_b'):  # SVT's complex biases
            tensor = torch.randn(shape, generator=generator) * 0.05
        elif name.startswith('complex_weight_lh'):  # (2, blocks, d, d)
            tensor = torch.randn(shape, generator=generator) / math.sqrt(
                2 * shape[-2])
        elif len(shape) == 1:  # a norm's scale
            tensor = 1 + torch.randn(shape, generator=generator) * 0.1
        else:
            fan_in = math.prod(shape[1:])
            tensor = torch.randn(shape, generator=generator) / math.sqrt(
                fan_in)
        state_dict[key] = tensor
    return state_dict
