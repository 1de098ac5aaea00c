# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Triton kernels of the package run on CPU, in Triton's interpreter."""
import contextlib
import importlib

import pytest


@contextlib.contextmanager
def interpreted(module):
    """``module`` reloaded with ``TRITON_INTERPRET=1`` (Triton reads it when
    the kernels are defined), and reloaded as it was afterwards."""
    patch = pytest.MonkeyPatch()
    patch.setenv('TRITON_INTERPRET', '1')
    try:
        yield importlib.reload(module)
    finally:
        patch.undo()
        importlib.reload(module)
