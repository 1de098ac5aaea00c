# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Time training as users run it: ``tools/train.py CONFIG`` on a data root
for a few iterations, its data loading, hooks and optimizer included, once
per set of extra arguments (``--run NAME=ARGS``; by default the config as
it is, then ``--no-cuda-graphs``), each in a process of its own, one after
the other. From mmengine's log:
the iteration time and the time spent waiting for data (medians over the
logged windows after the first ``--skip`` ones: the first iterations tune
kernels and record graphs); the largest memory allocated; and, on CUDA,
the largest memory the allocator reserved over the run. With
``--val-interval`` the runs also validate as they train (the config's
validation, every that many iterations), and each validation's seconds per
image and mIoU are reported.

Example (data made by tools/dataset_converters/make_demo_cityscapes.py):
    python tools/analysis_tools/benchmark_recipe.py \
        configs/wavemix/wavemix_256x16_l4_cityscapes.py data/cityscapes_1024 \
        --iters 60 --json work_dirs/recipe.json
    # other runs: --run recipe= --run graphs_kept='--cfg-options
    #     custom_hooks.2.keep_levels=True'
"""
import argparse
import glob
import json
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time

import torch
from mmengine.config import Config

from mmseg_wavemix.utils.analysis import write_json
from mmseg_wavemix.utils.checks import is_type
from mmseg_wavemix.utils.cli import input_errors_in_one_line, read_config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MARKER = 'benchmark_recipe: max_memory_reserved_bytes='
# tools/train.py in this process, the largest reserved memory kept across
# mmengine's resets of the peak statistics (at each log line)
CHILD = f"""
import runpy, sys, torch
peak = [0]
if torch.cuda.is_available():
    reset = torch.cuda.reset_peak_memory_stats
    def reset_keeping_the_peak(device=None):
        peak[0] = max(peak[0], torch.cuda.max_memory_reserved(device))
        reset(device)
    torch.cuda.reset_peak_memory_stats = reset_keeping_the_peak
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    if torch.cuda.is_available():
        print('{MARKER}' + str(max(peak[0], torch.cuda.max_memory_reserved())),
              flush=True)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time tools/train.py runs of a config on a data root')
    parser.add_argument('config', help='the training config')
    parser.add_argument(
        'data_root', help="the dataset's root (the config's train and val "
        'data_root are set to it)')
    parser.add_argument(
        '--run', action='append', metavar='NAME=ARGS', dest='runs',
        help="a run's name and tools/train.py's extra arguments, once per "
        "run (default: recipe= eager=--no-cuda-graphs)")
    parser.add_argument('--iters', type=int, default=60,
                        help='iterations per run (default: 60)')
    parser.add_argument('--interval', type=int, default=10,
                        help='iterations per logged window (default: 10)')
    parser.add_argument(
        '--skip', type=int, default=2,
        help='logged windows left out at the start of each run (default: 2)')
    parser.add_argument(
        '--val-interval', type=int,
        help='validate every this many iterations (default: no validation)')
    parser.add_argument('--work-dir', default='work_dirs/benchmark_recipe',
                        help='where the runs keep their logs')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[],
        help='more key=value overrides for every run (e.g. '
        'train_dataloader.num_workers=8)')
    parser.add_argument('--json', help='write the results to this file')
    args = parser.parse_args(argv)
    args.runs = args.runs or ['recipe=', 'eager=--no-cuda-graphs']
    for run in args.runs:
        if '=' not in run or not run.split('=', 1)[0]:
            parser.error(f'--run {run!r}: give NAME=ARGS (e.g. '
                         'eager=--no-cuda-graphs; recipe= for none)')
    for option in args.cfg_options:
        if '=' not in option:
            parser.error(f'--cfg-options {option!r}: give key=value')
    if args.iters < (args.skip + 1) * args.interval:
        parser.error(f'--iters {args.iters} leaves no logged window after '
                     f'the first --skip {args.skip} of --interval '
                     f'{args.interval} iterations: give at least '
                     f'{(args.skip + 1) * args.interval}')
    if args.val_interval is not None and not \
            0 < args.val_interval <= args.iters:
        parser.error(f'--val-interval {args.val_interval}: give 1 to '
                     f'--iters ({args.iters})')
    return args


def overrides(args, cfg: Config) -> list:
    """The config's data root, the run's length and logging, no checkpoint,
    validation every ``--val-interval`` iterations (none without it), the
    optimizer of its start throughout."""
    if args.val_interval is None:
        validation = [f'train_cfg.val_begin={args.iters + 1}']  # none at all
    else:
        validation = [
            f'train_cfg.val_begin={args.val_interval}',
            f'train_cfg.val_interval={args.val_interval}'
        ]
    options = [
        f'{loader}.dataset.data_root={args.data_root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ] + validation + [
        f'train_cfg.max_iters={args.iters}',
        f'default_hooks.logger.interval={args.interval}',
        # each logged time the mean of the window since the last one
        f'log_processor.window_size={args.interval}',
        'default_hooks.checkpoint.save_last=False',
        f'default_hooks.checkpoint.interval={args.iters + 1}',
    ]
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        if is_type(hook, 'OptimizerSwitchHook'):
            options.append(f'custom_hooks.{i}.final_iters=0')
    return options + list(args.cfg_options)


def logged_rows(work_dir: str) -> list:
    """mmengine's logged scalars of the run in ``work_dir``, in order."""
    logs = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not logs:
        return []
    with open(logs[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def windows(rows: list) -> list:
    """The logged training windows: mmengine's scalars (``time``,
    ``data_time``, ``memory``, ``iter``)."""
    return [row for row in rows if 'time' in row and 'iter' in row]


def validations(rows: list, batch: int) -> list:
    """Each validation's mean seconds per image (mmengine logs them per
    batch of ``batch`` images; the loading and the metric's work included),
    mean wait for data per batch, and mIoU, after the iteration it
    followed."""
    return [
        dict(after_iter=row['step'], s_per_image=row['time'] / batch,
             data_time_s=row['data_time'], mIoU=row.get('mIoU'))
        for row in rows if 'time' in row and 'iter' not in row
    ]


def summarize(rows: list, skip: int, batch: int) -> dict:
    """Medians over the windows after the first ``skip``."""
    kept = rows[skip:]
    if not kept:
        raise ValueError(f'{len(rows)} logged windows: none after the '
                         f'first {skip}')
    times = [row['time'] for row in kept]
    median = statistics.median(times)
    result = dict(
        median_s=median,
        min_s=min(times),
        max_s=max(times),
        images_per_s=batch / median,
        data_time_s=statistics.median(row['data_time'] for row in kept),
        windows=len(kept))
    memory = [row['memory'] for row in rows if 'memory' in row]
    if memory:  # mmengine: MB (2^20 bytes) allocated at most in a window
        result['max_allocated_mb'] = max(memory)
    return result


def run_one(args, name: str, extra: list, options: list, batch: int,
            val_batch: int) -> dict:
    work_dir = osp.join(args.work_dir, name)
    command = [
        sys.executable, '-c', CHILD,
        osp.join(REPO_ROOT, 'tools', 'train.py'), args.config, '--work-dir',
        work_dir, *extra, '--cfg-options', *options
    ]
    print(f'== {name}: tools/train.py {args.config} {shlex.join(extra)}',
          flush=True)
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in child.stdout:  # the log's progress lines shown as they come
        lines.append(line.rstrip('\n'))
        if 'Iter(' in line or 'CUDA graphs' in line:
            print(f'   {lines[-1]}', flush=True)
    returncode = child.wait()
    entry = dict(args=extra, returncode=returncode,
                 wall_s=time.perf_counter() - start,
                 log_lines=[line for line in lines if 'CUDA graphs' in line])
    failure = None if returncode == 0 else f'exit {returncode}'
    rows = logged_rows(work_dir)
    try:
        entry['train'] = summarize(windows(rows), args.skip, batch)
    except ValueError as error:
        failure = f'{error}; exit {returncode}'
    if args.val_interval is not None:
        entry['val'] = validations(rows, val_batch)
        if failure is None and \
                len(entry['val']) != args.iters // args.val_interval:
            failure = (f"{len(entry['val'])} validations logged, "
                       f'{args.iters // args.val_interval} expected')
    if failure is not None:  # the end of its output says why
        tail = '\n'.join(lines[-5:])
        entry['errors'] = dict(train=f'{failure}: {tail}')
    reserved = [int(line[len(MARKER):]) for line in lines
                if line.startswith(MARKER)]
    if reserved and 'train' in entry:
        entry['train']['peak_memory_mb'] = reserved[-1] / 2**20
    return entry


def run(args) -> dict:
    cfg = read_config(args.config)
    options = overrides(args, cfg)
    cfg.merge_from_dict(
        dict(option.split('=', 1) for option in args.cfg_options))
    batch = int(cfg.train_dataloader.batch_size)
    val_batch = int(cfg.val_dataloader.batch_size)
    results = {}
    data = dict(
        config=args.config, data_root=args.data_root, iters=args.iters,
        interval=args.interval, skip=args.skip, batch=batch,
        torch=torch.__version__, cuda=torch.version.cuda,
        device=torch.cuda.get_device_name()
        if torch.cuda.is_available() else 'cpu',
        results=results, finished=False)
    for run in args.runs:
        name, extra = run.split('=', 1)
        results[name] = run_one(args, name, shlex.split(extra), options,
                                batch, val_batch)
        if args.json:  # what was measured, should a later run be cut
            write_json(args.json, data)
    data['finished'] = True
    if args.json:
        write_json(args.json, data)
    width = max([20, *map(len, results)])
    print(f"\n{'run':{width}s} {'step':>9s} {'images/s':>9s} "
          f"{'data wait':>10s} {'allocated':>12s} {'reserved':>12s}")
    for name, entry in results.items():
        if 'errors' in entry:
            last = entry['errors']['train'].splitlines()[-1]
            print(f'{name:{width}s} failed (exit {entry["returncode"]}): '
                  f'{last}')
            continue
        t = entry['train']
        memory = [
            f'{t[key] / 1024:8.2f} GiB' if key in t else f'{"-":>12s}'
            for key in ('max_allocated_mb', 'peak_memory_mb')
        ]
        val = ', '.join(f'{v["s_per_image"]:.3f}'
                        for v in entry.get('val', []))
        print(f'{name:{width}s} {t["median_s"]:8.3f}s '
              f'{t["images_per_s"]:9.1f} {t["data_time_s"]:9.3f}s '
              f'{memory[0]} {memory[1]}'
              + (f'  validation s/image: {val}' if val else ''))
    return data


@input_errors_in_one_line
def main(argv=None):
    data = run(parse_args(argv))
    failed = [n for n, e in data['results'].items() if 'errors' in e]
    if failed:
        sys.exit(f'failed: {", ".join(failed)}')


if __name__ == '__main__':
    main()
