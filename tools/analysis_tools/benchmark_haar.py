# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Time one level of the 2D Haar DWT, forward + backward, against
pytorch_wavelets, a grouped stride-2 convolution and ``x.clone()`` (the
memory-bound floor: one read and one write each way).

Rounds are interleaved across implementations (round r of each, then
r + 1, ...), so that ratios hold on a noisy machine.

Example:
    python tools/analysis_tools/benchmark_haar.py --shape 4 64 256 512 \
        --threads 2 --json work_dirs/haar.json
"""
import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.accel.timing import time_ms
from mmseg_wavemix.ops import HaarDWT, haar_dwt
from mmseg_wavemix.utils.analysis import add_timing_args, write_json
from mmseg_wavemix.utils.cli import positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark the Haar DWT')
    parser.add_argument('--shape', type=positive_int, nargs=4,
                        default=(4, 64, 256, 512),
                        metavar=('N', 'C', 'H', 'W'),
                        help='input size (default: 4 64 256 512)')
    parser.add_argument('--dtype', choices=['fp32', 'bf16', 'fp16'],
                        default='fp32')
    parser.add_argument('--channels-last', action='store_true',
                        help='the input in channels_last (as in a prepared '
                        'model) instead of NCHW')
    add_timing_args(parser, repeat=5, warmup=2)
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile of our transform')
    return parser.parse_args(argv)


def grouped_conv_dwt(channels, dtype, device):
    """The DWT as a grouped 2x2 stride-2 convolution with the Haar filters
    (four outputs per channel), as often written with conv2d."""
    lo, hi = torch.tensor([1., 1.]), torch.tensor([1., -1.])
    filters = torch.stack([
        lo[:, None] * lo, hi[:, None] * lo, lo[:, None] * hi, hi[:, None] * hi
    ]) * 0.5
    weight = filters[:, None].repeat(channels, 1, 1, 1).to(device, dtype)
    return lambda x: F.conv2d(x, weight, stride=2, groups=channels)


def implementations(args, channels, dtype, device):
    impls = {
        'ours': haar_dwt,
        'pytorch_wavelets': HaarDWT('pytorch_wavelets').to(device),
        'grouped conv2d': grouped_conv_dwt(channels, dtype, device),
        'x.clone()': torch.clone,
    }
    if args.compile:
        impls['ours, torch.compile'] = torch.compile(haar_dwt, dynamic=False)
    return impls


def forward_backward(fn, x, sync=True):
    outs = fn(x)
    outs = outs if isinstance(outs, tuple) else (outs, )
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    if x.is_cuda and sync:
        torch.cuda.synchronize()


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = dict(fp32=torch.float32, bf16=torch.bfloat16,
                 fp16=torch.float16)[args.dtype]
    x = torch.randn(*args.shape, device=args.device, dtype=dtype)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    impls = implementations(args, args.shape[1], dtype, args.device)
    times = {name: [] for name in impls}
    # on a GPU also its own time, the host's launches hidden behind queued
    # work (as a CUDA graph would replay the step): wall time above that is
    # the host's
    device_times = {name: [] for name in impls} if x.is_cuda else {}
    for round_ in range(args.warmup + args.repeat):
        for name, fn in impls.items():
            x.grad = None
            start = time.perf_counter()
            forward_backward(fn, x)
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
                if device_times:
                    x.grad = None
                    device_times[name].append(time_ms(
                        partial(forward_backward, fn, x, sync=False),
                        x.device))
    results = {
        name: dict(median_ms=statistics.median(t) * 1e3,
                   min_ms=min(t) * 1e3, max_ms=max(t) * 1e3)
        for name, t in times.items()
    }
    for name, t in device_times.items():
        results[name]['device_median_ms'] = statistics.median(t)
    return results


def format_table(results, args):
    ours = results['ours']['median_ms']
    clone = results['x.clone()']['median_ms']
    shape = 'x'.join(map(str, args.shape))
    layout = 'channels_last' if args.channels_last else 'NCHW'
    device = 'device_median_ms' in results['ours']
    lines = [f'Haar DWT forward + backward, input {shape} {args.dtype} '
             f'{layout} on {args.device}, {torch.get_num_threads()} threads '
             f'(median of {args.repeat})',
             f'{"implementation":22s} {"ms":>8s} {"vs ours":>8s} '
             f'{"vs clone":>9s}' +
             (f' {"GPU ms":>8s} {"vs clone":>9s}' if device else '')]
    for name, r in results.items():
        ms = r['median_ms']
        line = f'{name:22s} {ms:8.2f} {ms / ours:7.2f}x {ms / clone:8.2f}x'
        if device:
            gpu = r['device_median_ms']
            line += f' {gpu:8.3f} ' \
                f'{gpu / results["x.clone()"]["device_median_ms"]:8.2f}x'
        lines.append(line)
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    print(format_table(results, args))
    if args.json:
        write_json(args.json, dict(settings=vars(args),
                                   torch=torch.__version__,
                                   threads=torch.get_num_threads(),
                                   results=results))


if __name__ == '__main__':
    main()
