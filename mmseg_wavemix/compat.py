# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Fixes for what the current PyTorch stack breaks in OpenMMLab 1.x, in one
place. Each function is small, idempotent and documented in the README.

1. :func:`mmengine_checkpoint_loading`: torch >= 2.6 loads with
   ``weights_only=True``, which rejects the mmengine objects inside every
   training checkpoint (``HistoryBuffer`` in the message hub, numpy scalars
   and arrays), so ``--resume`` and ``tools/test.py CONFIG CKPT`` fail. Our
   tools run inside this context, which allow-lists exactly those types;
   nothing changes for other code that imports the package.
2. :func:`resolve_amp`: mmengine's ``AmpOptimWrapper`` asserts a CUDA (or
   NPU/MLU/MUSA) device, so ``--amp`` (or an AMP config) crashes on a CPU
   machine. We fall back to fp32 with one warning.
3. :func:`make_torchvision_importable`: on a CPU-only torch, the only
   torchvision wheels available are linked against CUDA; their compiled ops
   do not load and ``import torchvision`` then fails inside its own meta
   registrations (``operator torchvision::nms does not exist``), so
   ``import mmpretrain.models`` fails too. We define the two operators that
   torchvision registers unconditionally, with kernels that raise a clear
   error if ever called; everything else in torchvision is pure Python.
"""
import contextlib
import importlib.machinery
import importlib.util
import os.path as osp
import warnings

import torch

_TORCHVISION_UNGUARDED_OPS = {
    'nms': 'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms': 'qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
}
_torchvision_library = None  # keeps the op definitions alive


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types that mmengine writes into training checkpoints."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in np.typecodes['All']
                     if t not in 'OV']
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar,
            *dtype_classes]


@contextlib.contextmanager
def mmengine_checkpoint_loading():
    """Within this context ``torch.load(weights_only=True)`` reads mmengine
    training checkpoints.

    ``HistoryBuffer`` pickles its statistics methods as
    ``getattr(HistoryBuffer, 'min')``, hence ``getattr`` in the list; the
    weights-only unpickler still calls nothing but allow-listed globals, so
    it can only read attributes of these types. Other pickled code is still
    rejected.
    """
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is None:  # torch < 2.5 does not load weights-only
        yield
        return
    with safe_globals([*mmengine_checkpoint_globals(), getattr]):
        yield


def amp_available() -> bool:
    """Whether mmengine's ``AmpOptimWrapper`` can run on this machine."""
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_musa_available, is_npu_available)
    return any(check() for check in (is_cuda_available, is_npu_available,
                                     is_mlu_available, is_musa_available))


# Arguments only AmpOptimWrapper takes.
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def resolve_amp(optim_wrapper: dict) -> dict:
    """The optimizer wrapper config to run on this machine.

    An ``AmpOptimWrapper`` config is returned unchanged where AMP can run;
    without CUDA (or NPU/MLU/MUSA) it becomes a plain fp32 ``OptimWrapper``,
    with one warning, instead of mmengine's assertion error.
    """
    if optim_wrapper.get('type') != 'AmpOptimWrapper' or amp_available():
        return optim_wrapper
    warnings.warn(
        'AMP (AmpOptimWrapper, --amp) needs a CUDA (or NPU/MLU/MUSA) device '
        'and none is available: training in fp32 instead.',
        stacklevel=2)
    fp32 = {k: v for k, v in optim_wrapper.items() if k not in _AMP_ONLY_KEYS}
    fp32['type'] = 'OptimWrapper'
    return type(optim_wrapper)(fp32)


def _torchvision_ops_load() -> bool:
    spec = importlib.util.find_spec('torchvision')
    if spec is None or spec.origin is None:
        return True  # nothing to fix: no torchvision installed
    package_dir = osp.dirname(spec.origin)
    ext = importlib.machinery.EXTENSION_SUFFIXES
    candidates = [osp.join(package_dir, '_C' + s) for s in ext]
    library = next((c for c in candidates if osp.exists(c)), None)
    if library is None:
        return False
    try:
        torch.ops.load_library(library)
    except (OSError, RuntimeError):
        return False
    return True


def make_torchvision_importable() -> bool:
    """Make ``import torchvision`` work where its compiled ops cannot load.

    Returns:
        bool: True if the placeholder operators were defined.
    """
    global _torchvision_library
    if _torchvision_library is not None or _torchvision_ops_load():
        return False
    if all(hasattr(torch.ops.torchvision, op)
           for op in _TORCHVISION_UNGUARDED_OPS):
        return False
    library = torch.library.Library('torchvision', 'DEF')
    for name, schema in _TORCHVISION_UNGUARDED_OPS.items():
        library.define(schema)

        def unavailable(*args, _name=name, **kwargs):
            raise RuntimeError(
                f'torchvision::{_name} is unavailable: the installed '
                'torchvision was built for another torch/CUDA and its '
                'compiled ops cannot load. Install the torchvision build '
                f'that matches torch {torch.__version__} to use it.')

        library.impl(name, unavailable, 'CompositeExplicitAutograd')
    _torchvision_library = library
    return True
