# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Benchmark models from their configs: parameters, FLOPs, inference latency,
images/s, training-step time and peak memory, for several configs in one run.

Timed runs are interleaved across configs (round r of every config, then
round r + 1, ...) so that ratios hold on a noisy machine. Peak memory is
measured in a fresh process per config: the CUDA allocator's peak on GPU; on
CPU (Linux) the rise of the peak resident set size (VmHWM, reset after the
model is built) over the resident size of the built model.

Example:
    python tools/benchmark.py configs/wavemix/wavemix_256x16_l4_cityscapes.py \
        --compare mmseg::segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py \
        --shape 512 1024 --train --json work_dirs/benchmark.json
"""
import argparse
import gc
import json
import multiprocessing
import os
import statistics
import time
from contextlib import nullcontext

import torch

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.engine.analysis import build_model_from_config, count_flops

DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark models')
    parser.add_argument(
        'config', help='config to benchmark (mmseg::path/to/config.py works)')
    parser.add_argument(
        '--compare', nargs='+', default=[], help='more configs, same run')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=(512, 1024),
        metavar=('H', 'W'), help='input size (default: 512 1024)')
    parser.add_argument('--batch', type=int, default=1, help='batch size')
    parser.add_argument(
        '--train', action='store_true', help='also time a training step')
    parser.add_argument('--dtype', choices=DTYPES, default='fp32',
                        help='autocast dtype (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeat', type=int, default=3,
                        help='timed rounds (default: 3)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed rounds first (default: 1)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads on CPU (default: torch default)')
    parser.add_argument('--no-flops', action='store_true',
                        help='skip the FLOP count (it runs one more pass)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory measurement')
    parser.add_argument('--json', help='write the results to this file')
    return parser.parse_args(argv)


class Bench:
    """One config's model, inputs and timed steps."""

    def __init__(self, config, args):
        self.cfg, self.model = build_model_from_config(config)
        self.name = config
        self.args = args
        self.scope = self.cfg.get('default_scope', 'mmseg')
        self.device = torch.device(args.device)
        self.model.to(self.device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if args.compile \
            else self.model
        h, w = args.shape
        self.inputs = torch.randn(args.batch, 3, h, w, device=self.device)
        if args.channels_last:
            self.inputs = self.inputs.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-6)

    def autocast(self):
        dtype = DTYPES[self.args.dtype]
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def data_samples(self):
        h, w = self.args.shape
        if self.scope == 'mmpretrain':
            from mmpretrain.structures import DataSample
            classes = self.cfg.model.head.num_classes
            return [
                DataSample().set_gt_label(torch.randint(0, classes, (1, )))
                for _ in range(self.args.batch)
            ]
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        classes = self.cfg.model.decode_head.num_classes
        return [
            SegDataSample(
                gt_sem_seg=PixelData(data=torch.randint(
                    0, classes, (1, h, w), device=self.device)),
                metainfo=dict(img_shape=(h, w), pad_shape=(h, w)))
            for _ in range(self.args.batch)
        ]

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def infer(self):
        self.model.eval()
        with torch.no_grad(), self.autocast():
            self.forward(self.inputs, mode='tensor')
        self.sync()

    def train_step(self):
        self.model.train()
        samples = self.data_samples()
        with self.autocast():
            losses = self.forward(self.inputs, samples, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()

    def flops(self):
        return count_flops(self.model, self.inputs[:1])


def timed(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def peak_memory_mb(config, args, train):
    """Peak memory of one inference (or training) step, in a fresh process.
    """
    context = multiprocessing.get_context('spawn')
    with context.Pool(1) as pool:
        return pool.apply(_peak_memory_worker, (config, args, train))


def _peak_memory_worker(config, args, train):
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(config, args)
    step = bench.train_step if train else bench.infer
    if bench.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    gc.collect()
    _reset_peak_rss()
    base = _proc_status_kib('VmRSS')
    step()
    return max(_proc_status_kib('VmHWM') - base, 0) / 1024


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux
    >= 4.0); ru_maxrss cannot be used, it keeps the parent's peak across
    fork and exec."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _proc_status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def summary(times, batch):
    median = statistics.median(times)
    return dict(median_s=median, min_s=min(times), max_s=max(times),
                images_per_s=batch / median)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [args.config, *args.compare]
    benches = [Bench(config, args) for config in configs]
    results = {b.name: dict(params=sum(p.numel()
                                        for p in b.model.parameters()))
               for b in benches}
    if not args.no_flops:
        for bench in benches:
            results[bench.name]['flops'] = bench.flops()

    modes = [('inference', 'infer')] + ([('train', 'train_step')]
                                       if args.train else [])
    for mode, method in modes:
        times = {b.name: [] for b in benches}
        for round_ in range(args.warmup + args.repeat):
            for bench in benches:  # interleaved: one round of each config
                elapsed = timed(getattr(bench, method))
                if round_ >= args.warmup:
                    times[bench.name].append(elapsed)
        for name, values in times.items():
            results[name][mode] = summary(values, args.batch)
    del benches
    if not args.no_memory:
        for config in configs:
            for mode, _ in modes:
                results[config][mode]['peak_memory_mb'] = peak_memory_mb(
                    config, args, train=mode == 'train')
    return results


def format_table(results, args):
    h, w = args.shape
    head = (f'input {args.batch}x3x{h}x{w}, {args.dtype}, {args.device}, '
            f'{torch.get_num_threads()} threads'
            f'{", channels_last" if args.channels_last else ""}'
            f'{", compiled" if args.compile else ""}')
    columns = ['config', 'params (M)', 'GFLOPs', 'infer median (s)',
               'min-max (s)', 'images/s', 'infer peak MB']
    if args.train:
        columns += ['train step (s)', 'train peak MB']
    rows = []
    for name, r in results.items():
        inf = r['inference']
        row = [os.path.basename(name), f"{r['params'] / 1e6:.2f}",
               f"{r['flops'] / 1e9:.1f}" if 'flops' in r else '-',
               f"{inf['median_s']:.3f}",
               f"{inf['min_s']:.3f}-{inf['max_s']:.3f}",
               f"{inf['images_per_s']:.2f}",
               f"{inf.get('peak_memory_mb', float('nan')):.0f}"]
        if args.train:
            tr = r['train']
            row += [f"{tr['median_s']:.3f}",
                    f"{tr.get('peak_memory_mb', float('nan')):.0f}"]
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows))
              for i, c in enumerate(columns)]
    lines = [head, '  '.join(c.ljust(wd) for c, wd in zip(columns, widths))]
    lines += ['  '.join(v.ljust(wd) for v, wd in zip(r, widths)) for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but no CUDA device is '
                         'available')
    results = run(args)
    print(format_table(results, args))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)),
                    exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(settings=vars(args), results=results), f, indent=2)


if __name__ == '__main__':
    main()
