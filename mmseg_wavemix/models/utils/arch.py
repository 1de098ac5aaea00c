# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Argument checks the backbones share: a named arch or a custom one,
output indices and frozen stages."""
from typing import Sequence, Tuple, Union


def select_arch(settings: dict, arch: Union[str, dict]) -> dict:
    """The settings of the named ``arch``, or ``arch`` itself if it is a
    dict of the same keys; a ValueError naming the choices otherwise. Lists
    in a custom arch must have one length (one entry per stage)."""
    if isinstance(arch, str):
        if arch not in settings:
            raise ValueError(f'arch must be one of {sorted(settings)} or a '
                             f'dict, got {arch!r}')
        return settings[arch]
    keys = set(next(iter(settings.values())))
    lengths = {len(v) for v in arch.values() if isinstance(v, (list, tuple))
               } if isinstance(arch, dict) else set()
    if not isinstance(arch, dict) or set(arch) != keys or len(lengths) > 1:
        raise ValueError(f'a custom arch must be a dict of {sorted(keys)} '
                         f'(lists of one length), got {arch!r}')
    return arch


def check_out_indices(out_indices: Union[int, Sequence[int]], num: int,
                      unit: str) -> Tuple[int, ...]:
    """``out_indices`` as non-negative indices of ``num`` ``unit`` s (blocks
    or stages), in the given order; a ValueError if one is out of range."""
    indices = (out_indices, ) if isinstance(out_indices, int) else tuple(
        out_indices)
    if not indices or any(not isinstance(i, int) or not -num <= i < num
                          for i in indices):
        raise ValueError(f'out_indices must be {unit} indices in [-{num}, '
                         f'{num - 1}], got {out_indices!r}')
    return tuple(i % num for i in indices)


def check_frozen_stages(frozen_stages: int, num: int, unit: str,
                        lowest: int = 0) -> None:
    """A ValueError unless ``frozen_stages`` is in [``lowest``, ``num``]
    (``num`` ``unit`` s: blocks or stages)."""
    if not lowest <= frozen_stages <= num:
        raise ValueError(f'frozen_stages must be in [{lowest}, {num}] '
                         f'({unit}s), got {frozen_stages!r}')
