# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import contextlib
import logging
import os
import os.path as osp

# With pytest-xdist's workers (tools/run_tests.sh), each takes its share of
# the cores, its tool runs too: threads beyond the cores make torch's
# OpenMP threads wait on each other.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
if WORKERS > 1:
    os.environ.setdefault('OMP_NUM_THREADS', str(THREADS))

# The environment before the libraries add to it (cv2, torch's inductor and
# mmpretrain's imports set variables): the tools run from it, as a user's
# runs do, whatever the tests have imported by then.
START_ENVIRON = dict(os.environ)

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA_DIR = osp.join(REPO_ROOT, 'tests', 'data')


def pytest_configure(config):
    # 2-core CI machine: keep torch from oversubscribing it.
    torch.set_num_threads(THREADS)
    import mmseg_wavemix  # noqa: F401  (registers the plugin)
    from mmseg_wavemix.compat import make_torchvision_importable

    # mmengine's runners import torchvision (README "Compatibility")
    make_torchvision_importable()
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    from .test_tools.forked_tools import (format_configs_once,
                                          read_metafiles_once)
    read_metafiles_once()
    format_configs_once()


def pytest_collection_modifyitems(items):
    # The tool runs hold most of the longest files: in workers, start them
    # first, so that the last files handed out are short and the workers
    # end together (a tool file last kept one busy a minute alone).
    if WORKERS > 1:
        items.sort(key=lambda item: not item.nodeid.startswith(
            'tests/test_tools/'))


@contextlib.contextmanager
def logged_messages():
    """The messages logged to mmengine's current logger meanwhile (a list
    that fills as they come)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def host_reads():
    """The operators run meanwhile that read a tensor's value on the host
    (``.item()``, a branch on a tensor, ``nonzero``), by name: on a GPU
    each waits for the work queued before it."""
    from torch.utils._python_dispatch import TorchDispatchMode
    reads = []

    class LogReads(TorchDispatchMode):

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten._local_scalar_dense,
                                       torch.ops.aten.nonzero):
                reads.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with LogReads():
        yield reads


@pytest.fixture(scope='session')
def reference_fixtures():
    """Models, inputs and outputs of the authors' wavemix==0.2.4, made by
    tests/data/make_reference_fixtures.py."""
    return torch.load(
        osp.join(DATA_DIR, 'wavemix_reference_fixtures.pth'),
        weights_only=True)


@pytest.fixture
def kernel_calls(monkeypatch):
    """The kernels in Triton's interpreter, serving CPU tensors; each call
    of a kernel of ops/level_mlp_triton.py is counted in ``calls``."""
    pytest.importorskip(
        'triton', reason='Triton is not installed (requirements/tests.txt)')
    from mmseg_wavemix.ops import level_mlp_triton

    from .test_ops.triton_interpreter import interpreted
    with interpreted(level_mlp_triton) as module:
        monkeypatch.setattr(
            module, 'applies', lambda x, dtype=None:
            (dtype or x.dtype) in (torch.float16, torch.bfloat16))
        calls = []
        for name in ('linear_gelu', 'conv_transpose_k4s2',
                     'conv_transpose_k4s2_tma', 'add_bias_residual_',
                     'matmul_add'):
            kernel = getattr(module, name)
            monkeypatch.setattr(
                module, name,
                lambda *a, kernel=kernel, name=name, **k: calls.append(name)
                or kernel(*a, **k))
        yield calls
        monkeypatch.undo()
