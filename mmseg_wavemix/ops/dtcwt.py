# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One level of the 2D dual-tree complex wavelet transform (DTCWT), forward
and inverse, through pytorch_wavelets (the reference SVT's authors use).

What this adds to ``DTCWTForward(J=1)`` / ``DTCWTInverse``:

- the transform runs in float32 with autocast off: pytorch_wavelets'
  backward fails on bf16, and fp16 filters lose the perfect reconstruction;
- the fixed filters are non-persistent buffers: they follow ``.to()`` but
  are not part of a model's state dict;
- odd sizes: pytorch_wavelets extends the input by its last row/column; the
  inverse crops back to the input size.
"""
import warnings
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor


def _make_buffers_non_persistent(module: nn.Module) -> None:
    for name, buffer in list(module.named_buffers(recurse=False)):
        delattr(module, name)
        module.register_buffer(name, buffer, persistent=False)


class DTCWT(nn.Module):
    """Level-1 DTCWT with the given filters.

    Shapes, for an (N, C, H, W) input (H, W rounded up to even):
    ``forward`` returns the low-pass band (N, C, H, W) (level 1 does not
    decimate) and the six oriented complex high-pass bands
    (N, C, 6, H / 2, W / 2, 2), real and imaginary parts last;
    :meth:`inverse` takes both back to (N, C, H, W).

    Args:
        biort (str): Level-1 biorthogonal filters. Default: 'near_sym_b'.
        qshift (str): Quarter-shift filters (unused at level 1, kept for
            pytorch_wavelets' signature). Default: 'qshift_b'.
    """

    def __init__(self, biort: str = 'near_sym_b', qshift: str = 'qshift_b'):
        super().__init__()
        # imported when needed: `import mmseg_wavemix` stays light, and its
        # import of pkg_resources warns of a deprecation users cannot act on
        with warnings.catch_warnings():
            warnings.filterwarnings(
                'ignore', message='pkg_resources is deprecated')
            try:
                from pytorch_wavelets import DTCWTForward, DTCWTInverse
            except ImportError as e:
                raise ImportError(
                    'the DTCWT (SVT) needs pytorch_wavelets and PyWavelets: '
                    'pip install pytorch_wavelets PyWavelets '
                    '"setuptools>=77,<81"') from e
        self.xfm = DTCWTForward(J=1, biort=biort, qshift=qshift)
        self.ifm = DTCWTInverse(biort=biort, qshift=qshift)
        _make_buffers_non_persistent(self.xfm)
        _make_buffers_non_persistent(self.ifm)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            low, highs = self.xfm(x.float())
        return low, highs[0]

    def inverse(self, low: Tensor, highs: Tensor,
                size: Tuple[int, int]) -> Tensor:
        """The image of ``size`` (H, W) the bands came from, float32."""
        with torch.autocast(low.device.type, enabled=False):
            x = self.ifm((low.float(), [highs.float()]))
        return x[..., :size[0], :size[1]]
