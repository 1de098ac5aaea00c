# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Triton kernels of the package run on CPU, in Triton's interpreter."""
import contextlib
import importlib

import pytest


@contextlib.contextmanager
def interpreted(*modules):
    """``modules`` reloaded, in order, with ``TRITON_INTERPRET=1`` (Triton
    reads it when the kernels are defined), and reloaded as they were
    afterwards; yields the last. An interpreted kernel calls only
    interpreted functions: a module whose kernels call another module's
    ``@triton.jit`` helpers comes after it (``interpreted(accuracy,
    log_softmax_gather)``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv('TRITON_INTERPRET', '1')
    try:
        yield [importlib.reload(module) for module in modules][-1]
    finally:
        patch.undo()
        for module in modules:
            importlib.reload(module)
