# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Time the softmax focal loss's two passes over the logits (each pixel's
log-probability of its label, and its gradient) at a head's logits size:
the Triton kernels (``ops/log_softmax_gather.py``, on a GPU) against
PyTorch's kernels, forward + backward, rounds interleaved, with each one's
peak memory above the inputs' (on a GPU, the allocator's).

Example:
    python tools/analysis_tools/benchmark_focal_loss.py --device cuda \
        --shape 5 19 1024 2048 --dtype fp16 --channels-last \
        --json work_dirs/focal_loss.json
"""
import argparse
import statistics
import time

import torch

from mmseg_wavemix.models.accel.timing import time_ms
from mmseg_wavemix.ops import log_softmax_gather as ops
from mmseg_wavemix.utils.analysis import add_timing_args, write_json
from mmseg_wavemix.utils.cli import positive_int

DTYPES = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Benchmark the focal loss's passes over the logits")
    parser.add_argument('--shape', type=positive_int, nargs=4,
                        default=(5, 19, 1024, 2048),
                        metavar=('N', 'C', 'H', 'W'),
                        help="the logits' size (default: the recipe's, "
                        '5 19 1024 2048)')
    parser.add_argument('--dtype', choices=list(DTYPES), default='fp16')
    parser.add_argument('--channels-last', action='store_true',
                        help='the logits in channels_last (a prepared '
                        "model's)")
    add_timing_args(parser, repeat=10, warmup=2)
    return parser.parse_args(argv)


def passes(logits, labels, grad, use_kernels):
    """Forward and backward of the loss's log-probabilities, by the kernels
    or PyTorch's."""
    ops.log_softmax_gather(logits, labels, use_kernels)
    ops.log_softmax_gather_backward(grad, logits, labels, use_kernels)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, c, h, w = args.shape
    logits = torch.randn(n, c, h, w, device=device,
                         dtype=DTYPES[args.dtype])
    if args.channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, c, (n, h, w), device=device)
    grad = torch.randn(n, h, w, device=device)
    ways = {'pytorch': False}
    if ops.applies(logits, labels):
        ways = {'triton': True, **ways}
    times = {name: [] for name in ways}
    device_times = {name: [] for name in ways} if device.type == 'cuda' \
        else {}
    for round_ in range(args.warmup + args.repeat):
        for name, use_kernels in ways.items():
            start = time.perf_counter()
            passes(logits, labels, grad, use_kernels)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
                if device_times:
                    device_times[name].append(time_ms(
                        lambda: passes(logits, labels, grad, use_kernels),
                        device))
    results = {
        name: dict(median_ms=statistics.median(t) * 1e3, min_ms=min(t) * 1e3,
                   max_ms=max(t) * 1e3)
        for name, t in times.items()
    }
    for name, t in device_times.items():
        results[name]['device_median_ms'] = statistics.median(t)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        passes(logits, labels, grad, ways[name])
        results[name]['peak_mb'] = \
            (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return results


def format_table(results, args):
    shape = 'x'.join(map(str, args.shape))
    layout = 'channels_last' if args.channels_last else 'NCHW'
    lines = [f'focal loss log_softmax_gather forward + backward, logits '
             f'{shape} {args.dtype} {layout} on {args.device} (median of '
             f'{args.repeat})']
    for name, r in results.items():
        line = f'{name:10s} {r["median_ms"]:8.2f} ms'
        if 'device_median_ms' in r:
            line += f' (GPU {r["device_median_ms"]:.3f} ms, peak ' \
                f'{r["peak_mb"]:.0f} MB above the inputs)'
        lines.append(line)
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    print(format_table(results, args))
    if args.json:
        write_json(args.json, dict(settings=vars(args),
                                   torch=torch.__version__,
                                   results=results))


if __name__ == '__main__':
    main()
