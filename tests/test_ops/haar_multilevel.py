# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Multi-level transforms built from the package's single-level ones, laid
out as pytorch_wavelets' ``DWTForward(J=levels, wave='haar', mode='zero')``,
for the tests."""
from typing import List, Sequence, Tuple

from torch import Tensor

from mmseg_wavemix.ops import haar_dwt, haar_idwt


def haar_wavedec2(x: Tensor, levels: int) -> Tuple[Tensor, List[Tensor]]:
    """Multi-level 2D Haar DWT, cascaded on the low-pass band.

    Same output layout as pytorch_wavelets ``DWTForward(J=levels,
    wave='haar', mode='zero')``: the coarsest ``ll`` and the list of ``highs``
    from the finest (level 1) to the coarsest.

    Args:
        x (Tensor): Input of shape (N, C, H, W) (any leading dims work).
        levels (int): Number of levels (>= 1).

    Returns:
        tuple[Tensor, list[Tensor]]: ``(ll, [highs_1, ..., highs_levels])``.
    """
    if levels < 1:
        raise ValueError(f'levels must be >= 1, got {levels}')
    highs = []
    ll = x
    for _ in range(levels):
        ll, level_highs = haar_dwt(ll)
        highs.append(level_highs)
    return ll, highs


def haar_waverec2(ll: Tensor, highs: Sequence[Tensor]) -> Tensor:
    """Inverse of :func:`haar_wavedec2` (no crop of odd sizes).

    Each level's reconstruction is cropped to the size of the next finer
    ``highs`` band, which undoes the zero padding of odd intermediate sizes.
    """
    x = ll
    for level_highs in reversed(highs):
        h, w = level_highs.shape[-2:]
        x = haar_idwt(x[..., :h, :w], level_highs)
    return x
