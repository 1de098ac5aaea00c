# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""What the command-line tools share: MMSeg's arguments and ours, config
reading and loading, the model built once for the checks, one-line errors
and runner construction."""
import argparse
import copy
import importlib.util
import logging
import os
import os.path as osp
import sys
from functools import partial, wraps
from typing import Callable

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, DefaultScope
from mmengine.runner import Runner

from mmseg_wavemix.compat import make_torchvision_importable
from mmseg_wavemix.models.accel.cuda_graphs import ALLOCATOR_VARIABLES

from .checkpoints import convert_file
from .checks import InputError, describe, is_type, package_file


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments that MMSeg's train and test tools both take."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (sizes, batches, rounds)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text} is not an integer >= 1')
    return value


def add_check_args(parser: argparse.ArgumentParser) -> None:
    """How strictly the tools check their input before starting."""
    parser.add_argument(
        '--strict-load',
        choices=['true', 'false'],
        default='true',
        help='true (default): stop if the checkpoint (load_from, an '
        "init_cfg's Pretrained one, or the one to test) lacks a tensor of "
        'the model (or module) or has one of another shape; false: load '
        'what fits, e.g. to fine-tune from a backbone or other classes, and '
        'log what does not')
    parser.add_argument(
        '--check-labels',
        choices=['sample', 'full', 'off'],
        default='sample',
        help='label maps checked before starting: sizes of all and values '
        'of a sample (default), values of all (full), or none (off)')
    parser.add_argument(
        '--debug',
        action='store_true',
        help='show the full traceback of errors instead of one line')


def run_with_one_line_errors(main, args) -> None:
    """``main(args)``; any failure ends the program with one line naming it
    (the whole traceback with ``--debug``)."""
    try:
        main(args)
    except Exception as e:
        if args.debug:
            raise
        message = str(e) if isinstance(e, InputError) else (
            f'{describe(e)} (run with --debug for the traceback)')
        sys.exit(f'error: {message}')


def input_errors_in_one_line(main: Callable) -> Callable:
    """A tool's ``main`` whose input errors (:class:`InputError`: a missing
    config, a model that does not build, ...) end the program with their
    line; other failures keep their traceback."""

    @wraps(main)
    def main_in_one_line(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as e:
            sys.exit(f'error: {e}')

    return main_in_one_line


def convert_weights_main(convert: Callable[..., dict], model: str,
                         classifier: str, argv=None) -> None:
    """The command line of a converter of the authors' weights whose
    ``convert(checkpoint, with_head)`` maps their state dict to ours:
    ``SRC DST [--with-head]``; a bad source ends it with one line.

    Args:
        convert (Callable): The mapping, e.g. ``wavevit_convert``.
        model (str): The model's name in messages.
        classifier (str): The mmpretrain model ``--with-head`` is for.
        argv (list[str], optional): Arguments. Default: ``sys.argv``.
    """
    parser = argparse.ArgumentParser(
        description=f"Convert the {model} authors' weights to an mmseg / "
        'mmpretrain checkpoint')
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--with-head',
        action='store_true',
        help="keep their ImageNet heads, for mmpretrain's ImageClassifier "
        f'with {classifier}')
    args = parser.parse_args(argv)
    input_errors_in_one_line(convert_file)(
        args.src, args.dst, partial(convert, with_head=args.with_head), model)


def check_model(cfg: Config) -> torch.nn.Module:
    """Build the config's model once before the runner (which first prints
    the whole config): a misspelt or invalid argument ends in one line."""
    try:
        return build_model(cfg)
    except Exception as e:
        raise InputError(f'cannot build the model of {cfg.filename}: '
                         f'{describe(e)}; check model.* in the config and '
                         '--cfg-options') from e


def resolve_config_path(path: str) -> str:
    """``mmseg_wavemix::wavemix/x.py`` -> the config file of the installed
    package: in its ``.mim/configs`` (where a wheel carries them, and where
    mmengine finds ``mmseg::`` bases), or in the ``configs`` of the source
    checkout next to the package (an editable install). Other paths are
    returned as they are."""
    if '::' not in path:
        return path
    package, relative = path.split('::', 1)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f'{path}: package {package!r} is not installed')
    return package_file(osp.join('configs', relative),
                        spec.submodule_search_locations[0])


def read_config(path: str) -> Config:
    """The config file at ``path`` (``mmseg_wavemix::``, ``mmseg::`` paths
    too); one that is missing or cannot be read is an :class:`InputError`
    naming it."""
    resolved = resolve_config_path(path)
    if not osp.isfile(resolved):
        raise InputError(f'config file not found: {path}')
    try:
        return Config.fromfile(resolved)
    except Exception as e:
        raise InputError(f'cannot read the config {path}: '
                         f'{describe(e)}') from e


def load_config(args: argparse.Namespace) -> Config:
    """Load ``args.config`` and apply the common command-line overrides."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = read_config(args.config)
    args.config = resolve_config_path(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.launcher != 'none' and not torch.cuda.is_available():
        use_cpu_distributed(cfg)
    if not torch.cuda.is_available():
        unpin_without_cuda(cfg)
    # work_dir priority: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def use_cpu_distributed(cfg: Config) -> None:
    """Multi-process training without CUDA: the gloo backend instead of nccl,
    CPU DDP (no device_ids) and BN instead of SyncBN (no CPU kernel)."""
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    if replace_sync_bn(cfg.get('model', {})):
        print_log(
            'SyncBN needs CUDA: using BN (per-process statistics) for this '
            'run without CUDA', logger='current', level=logging.WARNING)


def unpin_without_cuda(cfg: Config) -> None:
    """Data loaders that pin their batches (the recipe's) do not where
    there is no CUDA device: PyTorch would warn that it pins nothing."""
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if isinstance(loader, dict) and loader.get('pin_memory'):
            loader['pin_memory'] = False


def request_training_graphs(cfg: Config, on: bool = True) -> None:
    """``--cuda-graphs``: the config's ``FastTrainingHook`` (one added where
    it has none) replays the training forward and backward as CUDA
    graphs; ``--no-cuda-graphs`` (``on=False``): its hooks do not.

    Raises:
        InputError: For a classification (mmpretrain) config: the hook
            trains MMSeg's models.
    """
    hooks = list(cfg.get('custom_hooks') or [])
    fast = [hook for hook in hooks if is_type(hook, 'FastTrainingHook')]
    if not on:
        for hook in fast:
            hook['cuda_graphs'] = False
        return
    if cfg.get('default_scope') == 'mmpretrain':
        raise InputError(
            '--cuda-graphs trains segmentation configs (FastTrainingHook is '
            f"MMSeg's); {cfg.filename} is a classification config: train it "
            'without --cuda-graphs')
    for hook in fast:
        hook['cuda_graphs'] = True
    if not fast:
        hooks.append(dict(type='FastTrainingHook', cuda_graphs=True))
    cfg.custom_hooks = hooks
    if not torch.cuda.is_available():
        print_log(
            '--cuda-graphs: no CUDA device, so no graphs (training runs as '
            'without the option)', logger='current', level=logging.WARNING)


def expandable_segments_for_graphs(cfg: Config) -> None:
    """Where the config trains with CUDA graphs in one process, PyTorch's
    CUDA allocator with expandable segments, unless the environment
    configures the allocator (``PYTORCH_CUDA_ALLOC_CONF`` or
    ``PYTORCH_ALLOC_CONF``; ``expandable_segments:False`` keeps it as it
    was). Each memory pool, the graphs' too, is then one range of addresses
    mapped as it grows: on an H200 the recipe's graphed step reserved 11.0
    GiB with them, 12.3 GiB without. PyTorch reads the variable when CUDA
    first allocates, which the runner has not done yet."""
    graphs = any(
        is_type(hook, 'FastTrainingHook') and hook.get('cuda_graphs')
        for hook in cfg.get('custom_hooks') or [])
    # several processes train without graphs (prepare_for_training); slurm
    # sets its count of them, mmengine WORLD_SIZE later
    one_process = cfg.get('launcher', 'none') == 'none' or os.environ.get(
        'WORLD_SIZE', os.environ.get('SLURM_NTASKS', '1')) == '1'
    configured = any(os.environ.get(name) for name in ALLOCATOR_VARIABLES)
    if not graphs or not one_process or configured or \
            not torch.cuda.is_available() or torch.cuda.is_initialized():
        return
    os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'
    print_log(
        'CUDA graphs for training: PYTORCH_CUDA_ALLOC_CONF='
        'expandable_segments:True (less memory held in blocks of the wrong '
        'size; set the variable to configure the allocator otherwise)',
        logger='current')


def replace_sync_bn(node) -> bool:
    """Turn every ``SyncBN`` norm config inside ``node`` into ``BN``, in
    place; return whether there was one."""
    replaced = False
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            replaced = True
        for value in node.values():
            replaced |= replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replaced |= replace_sync_bn(value)
    return replaced


def build_model(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` with the registry of the config's scope, SyncBN as
    BN (it needs a process group and computes like BN in one process)."""
    model_cfg = copy.deepcopy(cfg.model)
    replace_sync_bn(model_cfg)
    scope = cfg.get('default_scope', 'mmseg')
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(model_cfg)


def build_runner(cfg: Config) -> Runner:
    """Build the runner the config asks for (mmengine's by default)."""
    # The runner logs the environment, importing torchvision, which fails
    # where its compiled ops cannot load (README "Compatibility").
    make_torchvision_importable()
    if cfg.get('launcher') == 'pytorch' and not torch.cuda.is_available() \
            and not torch.distributed.is_initialized():
        # mmengine's pytorch launcher calls torch.cuda.set_device, which a
        # CPU-only torch lacks; the runner skips it for an existing group.
        torch.distributed.init_process_group(
            backend=cfg.env_cfg.dist_cfg.get('backend', 'gloo'))
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
