# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Where a model's time goes: the operators and kernels of an inference (or
training) step, by their own time on the device, from ``torch.profiler``.

The entry is one of ``tools/benchmark.py`` (``CONFIG[@OPTIONS]``, e.g.
``@fp16,fast``), built and run the same way, with cuDNN's autotuning as in
training and testing.

Example:
    python tools/analysis_tools/profile_model.py \
        configs/wavemix/wavemix_256x16_l4_cityscapes.py@fp16,fast \
        --device cuda --shape 1024 2048 --train --batch 5
"""
import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.utils.benchmark import FLAGS, Bench, parse_entry


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Profile one step of a model by operator and kernel')
    parser.add_argument('config',
                        help='CONFIG[@OPTIONS], as tools/benchmark.py')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 1024),
                        metavar=('H', 'W'),
                        help='input size (default: 512 1024)')
    parser.add_argument('--batch', type=int, default=1, help='batch size')
    parser.add_argument('--train', action='store_true',
                        help='profile a training step, not an inference')
    parser.add_argument('--warmup', type=int, default=3,
                        help='steps before the profiled one (default: 3)')
    parser.add_argument('--rows', type=int, default=25,
                        help='rows of the table (default: 25)')
    parser.add_argument('--no-cudnn-benchmark', action='store_true',
                        help="leave cuDNN's algorithm search off")
    parser.add_argument('--trace', help='write a Chrome trace to this file')
    parser.add_argument('--json', help='write the rows to this file')
    return parser.parse_args(argv)


def bench_args(args):
    """The namespace :class:`Bench` reads, with this tool's settings."""
    return argparse.Namespace(
        device=args.device, shape=args.shape, batch=args.batch,
        train=args.train, dtype='fp32', authors_package=None,
        **{flag: False for flag in FLAGS})


def profile_step(bench, train, warmup):
    """The profiler of one step of ``bench`` after ``warmup`` steps."""
    step = bench.train_step if train else bench.infer
    for _ in range(warmup):
        step()
    activities = [ProfilerActivity.CPU]
    if bench.device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
    return prof


def rows(prof, device, count):
    """The ``count`` events with the most time of their own on ``device``:
    name, calls, total ms and share of the step."""
    attr = 'self_device_time_total' if device == 'cuda' else \
        'self_cpu_time_total'
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(getattr(e, attr) for e in events) or 1
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        dict(name=e.key, calls=e.count, ms=getattr(e, attr) / 1e3,
             share=getattr(e, attr) / total) for e in events[:count]
    ], total / 1e3


def main(argv=None):
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    bench = Bench(parse_entry(args.config, bench_args(args)), bench_args(args))
    prof = profile_step(bench, args.train, args.warmup)
    table, total_ms = rows(prof, args.device, args.rows)
    mode = 'training step' if args.train else 'inference'
    print(f'{args.config}: {mode}, {args.batch}x3x{args.shape[0]}x'
          f'{args.shape[1]}, {total_ms:.1f} ms of {args.device} time in all')
    for row in table:
        print(f'{row["ms"]:9.2f} ms {100 * row["share"]:5.1f}% '
              f'{row["calls"]:5d}x  {row["name"][:100]}')
    if args.trace:
        prof.export_chrome_trace(args.trace)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(entry=args.config, mode=mode, total_ms=total_ms,
                           rows=table), f, indent=1)


if __name__ == '__main__':
    main()
