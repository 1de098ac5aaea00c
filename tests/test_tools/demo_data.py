# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Helpers to run the command-line tools on generated Cityscapes data."""
import atexit
import glob
import importlib.util
import itertools
import json
import os
import os.path as osp
import subprocess
import sys
import warnings

from mmengine.dataset import InfiniteSampler

from ..conftest import REPO_ROOT, START_ENVIRON, THREADS
from .forked_tools import ToolServer

MAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'wavemix',
                       'wavemix_256x16_l4_cityscapes.py')


def tool_env():
    """Environment of the tools in tests: the tests' environment at their
    start (not what imports in this process have added since), the
    tests' threads (torch's threads waiting on each other in two processes
    sharing two cores made a tool run ten times slower), and the repository
    root importable (for test-only hooks loaded with
    custom_imports)."""
    return dict(
        START_ENVIRON,
        PYTHONUNBUFFERED='1',
        OMP_NUM_THREADS=str(THREADS),
        PYTHONPATH=os.pathsep.join(
            p for p in (REPO_ROOT, START_ENVIRON.get('PYTHONPATH')) if p))


_server = None


def tool_server():
    """The tests' :class:`~.forked_tools.ToolServer`, started at the first
    call in ``tool_env()``."""
    global _server
    if _server is None:
        _server = ToolServer(tool_env(), REPO_ROOT)
        atexit.register(_server.close)
        if not _server.ready:
            warnings.warn('the tools run in fresh interpreters (slower): the '
                          f'tool server did not start: {_server.error}')
    return _server


def tool_module(script):
    """``tools/<script>`` imported as a module (not run: its functions, for
    tests of its parts)."""
    name = osp.splitext(osp.basename(script))[0]
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(REPO_ROOT, 'tools', script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(script, *args, timeout=900, check=True):
    """Run ``tools/<script>`` with this interpreter, as ``python
    tools/<script> ARGS`` in ``tool_env()`` would (forked from a process with
    the libraries imported: :mod:`.forked_tools`); return the result."""
    env = tool_env()
    argv = [osp.join(REPO_ROOT, 'tools', script), *map(str, args)]
    if tool_server().serves(env):
        result = tool_server().run(argv, REPO_ROOT, env, timeout)
    else:  # a fresh interpreter
        result = subprocess.run([sys.executable, *argv],
                                capture_output=True,
                                text=True,
                                timeout=timeout,
                                cwd=REPO_ROOT,
                                env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f'tools/{script} failed ({result.returncode}):\n'
            f'{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
    return result


def make_cityscapes(root, num_train, num_val, height, width):
    """Generate raw Cityscapes-format data and convert it like real data."""
    run_tool('dataset_converters/make_demo_cityscapes.py', root,
             '--num-train', num_train, '--num-val', num_val, '--size', height,
             width)
    run_tool('dataset_converters/cityscapes.py', root, '--nproc', 2)
    return root


def data_root_options(root):
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ] + ['train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False',
         'val_dataloader.persistent_workers=False',
         'test_dataloader.persistent_workers=False',
         'test_dataloader.num_workers=0']


def sampler_order(root, seed, count):
    """The first ``count`` train image names that mmseg's shuffled
    ``InfiniteSampler`` with ``seed`` gives on the data at ``root`` (in one
    process; the dataset lists its images sorted)."""
    images = sorted(
        osp.basename(path) for path in glob.glob(
            osp.join(str(root), 'leftImg8bit', 'train', '*', '*.png')))
    order = InfiniteSampler(images, shuffle=True, seed=seed)
    return [images[index] for index in itertools.islice(order, count)]


def recorded_batches(work_dir, rank=0):
    """What ``RecordBatchesHook`` (start_state_hook.py) wrote for ``rank``:
    each iteration's number and image names."""
    with open(osp.join(str(work_dir), f'batches_rank{rank}.jsonl')) as file:
        return [json.loads(line) for line in file]
