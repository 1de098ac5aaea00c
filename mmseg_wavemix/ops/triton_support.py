# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Triton, imported in one place for the package's GPU kernels.

The kernels are written in Triton 3's language (``tl.split`` and ``tl.join``
first came in 3.0, which PyTorch >= 2.4 ships). PyTorch 2.0-2.3 ship Triton
2.x, which would fail to compile them at their first call on the GPU. There
``triton`` is None, as where Triton is not installed: the plain PyTorch ways
serve, and the first CUDA tensor that a kernel would have served says so
once (:func:`serves`).
"""
import re
import warnings

from torch import Tensor

MIN_VERSION = (3, 0)


def supports(version: str) -> bool:
    """Whether Triton ``version`` (e.g. ``'3.6.0'``) has the language the
    kernels use (:data:`MIN_VERSION`)."""
    numbers = tuple(int(n) for n in re.findall(r'\d+', version)[:2])
    return numbers >= MIN_VERSION


try:
    import triton
    import triton.language as tl
except ImportError:
    triton = tl = None
# The version of a Triton too old for the kernels, else None.
TOO_OLD = None
if triton is not None and not supports(triton.__version__):
    TOO_OLD, triton, tl = triton.__version__, None, None

_said_too_old = False


def available() -> bool:
    """Whether a Triton that compiles the kernels can be imported here."""
    return triton is not None


def serves(x: Tensor) -> bool:
    """Whether the Triton kernels can serve the tensor ``x``: on a CUDA
    device, with a Triton that compiles them. Where only Triton's version
    stands in the way, the first call warns."""
    global _said_too_old
    if not x.is_cuda:
        return False
    if TOO_OLD is not None and not _said_too_old:
        _said_too_old = True
        least = '.'.join(map(str, MIN_VERSION))
        warnings.warn(
            f'Triton {TOO_OLD} is older than {least}:'
            " mmseg_wavemix's GPU kernels (the Haar transform's, the fused "
            'level MLPs and losses) are not used, and the same is computed '
            'by plain PyTorch, more slowly. PyTorch >= 2.4 comes with Triton '
            '3 (README: GPU and distributed training).')
    return triton is not None
