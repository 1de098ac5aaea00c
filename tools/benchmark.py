# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Benchmark models from their configs: parameters, FLOPs, inference latency,
images/s, training-step time and peak memory, for several models in one run.

Each model is an entry ``CONFIG[@OPTIONS]``: a config (``mmseg::`` paths
work) or ``authors`` (the authors' ``wavemix==0.2.4`` model with the sizes of
the first config, see ``--authors-package``), and comma-separated options
that override the global flags for that entry: ``fp32``, ``bf16``, ``fp16``
(autocast), ``channels_last``, ``fuse_norm`` (BatchNorm folded into the
convolutions before it, for inference), ``fuse_classifier`` (a WaveMixHead's
classifier folded into its last transposed convolution, for inference; FLOPs
are counted on the model that runs), ``fuse_activation`` (each WaveMix level's
GELU inside its first convolution, for inference), ``fast`` (the inference
model of ``tools/test.py --fast``: all of these where they apply, and
channels_last), ``compile`` (torch.compile) and
``with_cp`` (the backbone's gradient checkpointing). One config may appear
with several option sets.

Timed runs are interleaved across entries (round r of every entry, then
round r + 1, ...) so that ratios hold on a noisy machine. Peak memory is
measured in a fresh process per entry: the CUDA allocator's peak on GPU; on
CPU (Linux) the rise of the peak resident set size (VmHWM, reset after the
model is built) over the resident size of the built model. For ``authors``
the largest difference from our model's logits (fp32, same weights through
``wavemix_convert``) is reported too. On CPU the kernel's share of the CPU
time of the timed steps is reported (JSON: ``kernel_cpu_share``,
``page_faults`` per step): mostly page faults, which glibc's allocator causes
by returning large blocks to the OS after each step; code that allocates less
pays less, and how much a fault costs varies between machines.

Example:
    python tools/benchmark.py configs/wavemix/wavemix_256x16_l4_cityscapes.py \
        --compare configs/wavemix/wavemix_256x16_l4_cityscapes.py@bf16,fast \
            authors mmseg::segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py \
        --authors-package work_dirs/authors_wavemix \
        --shape 512 1024 --train --json work_dirs/benchmark.json
"""
import argparse
import copy
import gc
import json
import multiprocessing
import os
import platform
import statistics
import time
from contextlib import nullcontext

try:
    import resource
except ImportError:  # Windows: CPU time and page faults are left out
    resource = None

import torch
import torch.nn.functional as F

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.engine import FastInferenceHook
from mmseg_wavemix.engine.analysis import (add_timing_args,
                                           build_model_from_config,
                                           count_flops)
from mmseg_wavemix.engine.authors_wavemix import build_authors_segmenter
from mmseg_wavemix.engine.cli import resolve_config_path
from mmseg_wavemix.models.decode_heads import WaveMixHead
from mmseg_wavemix.models.utils import (fuse_conv_gelu, fuse_norm_layers,
                                        wavemix_convert)

DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
FLAGS = ('channels_last', 'fuse_norm', 'fuse_classifier', 'fuse_activation',
         'fast', 'compile', 'with_cp')
AUTHORS = 'authors'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark models')
    parser.add_argument(
        'config', help='first entry: CONFIG[@OPTIONS] (see the docstring)')
    parser.add_argument(
        '--compare', nargs='+', default=[],
        help='more entries, same run: CONFIG[@OPTIONS] or authors[@OPTIONS]')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=(512, 1024),
        metavar=('H', 'W'), help='input size (default: 512 1024)')
    parser.add_argument('--batch', type=int, default=1, help='batch size')
    parser.add_argument(
        '--train', action='store_true', help='also time a training step')
    parser.add_argument('--dtype', choices=DTYPES, default='fp32',
                        help='autocast dtype (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--fuse-norm', action='store_true',
                        help='fold BatchNorm into convolutions (inference)')
    parser.add_argument('--fuse-classifier', action='store_true',
                        help="fold a WaveMixHead's classifier into its last "
                        'transposed convolution (inference)')
    parser.add_argument('--fuse-activation', action='store_true',
                        help="run each WaveMix level's GELU inside its first "
                        'convolution (inference)')
    parser.add_argument('--fast', action='store_true',
                        help='the inference model of tools/test.py --fast '
                        '(FastInferenceHook)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model')
    parser.add_argument('--with-cp', action='store_true',
                        help="the backbone's gradient checkpointing")
    parser.add_argument(
        '--authors-package',
        help="directory holding the authors' wavemix package (pip install "
        '--no-deps --target DIR wavemix==0.2.4 einops), for `authors`')
    add_timing_args(parser, repeat=3, warmup=1)
    parser.add_argument('--no-flops', action='store_true',
                        help='skip the FLOP count (it runs one more pass)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory measurement')
    return parser.parse_args(argv)


def parse_entry(spec, args):
    """``CONFIG[@opt,opt]`` -> dict(spec, path, dtype, <flags>)."""
    path, _, options = spec.partition('@')
    entry = dict(spec=spec, path=path, dtype=args.dtype,
                 **{flag: getattr(args, flag) for flag in FLAGS})
    for option in filter(None, options.split(',')):
        if option in DTYPES:
            entry['dtype'] = option
        elif option in FLAGS:
            entry[option] = True
        else:
            raise SystemExit(
                f'error: unknown option {option!r} in entry {spec!r}; use '
                f'{", ".join((*DTYPES, *FLAGS))}')
    if entry['fast']:
        entry['channels_last'] = True
    if path == AUTHORS and entry['with_cp']:
        raise SystemExit("error: the authors' model has no with_cp")
    return entry


class Bench:
    """One entry's model, inputs and timed steps."""

    def __init__(self, entry, args):
        self.entry = entry
        self.name = entry['spec']
        self.args = args
        self.device = torch.device(args.device)
        self.authors = entry['path'] == AUTHORS
        if self.authors:
            self.cfg, _ = load_main_config(args)
            self.model = build_authors_segmenter(self.cfg.model,
                                                 args.authors_package)
        else:
            options = {'model.backbone.with_cp': True} \
                if entry['with_cp'] else None
            self.cfg, self.model = build_model_from_config(
                entry['path'], options)
        self.scope = self.cfg.get('default_scope', 'mmseg')
        self.model.to(self.device)
        self.infer_model = self.model
        if any(entry[flag] for flag in ('fast', 'fuse_norm', 'fuse_classifier',
                                        'fuse_activation')):
            self.infer_model = copy.deepcopy(self.model).eval()
        if entry['fast']:
            FastInferenceHook().prepare(self.infer_model)
        if entry['fuse_norm']:
            fuse_norm_layers(self.infer_model)
        if entry['fuse_classifier']:
            head = getattr(self.infer_model, 'decode_head', None)
            if not (isinstance(head, WaveMixHead)
                    and head.can_fuse_classifier):
                raise SystemExit(
                    f'error: {self.name}: fuse_classifier needs a WaveMixHead '
                    'with nothing between its last upsampling and conv_seg')
            head.fuse_classifier()
        if entry['fuse_activation']:
            fuse_conv_gelu(self.infer_model)
        h, w = args.shape
        self.inputs = torch.randn(args.batch, 3, h, w, device=self.device)
        if entry['channels_last']:
            for model in {self.model, self.infer_model}:
                model.to(memory_format=torch.channels_last)
            self.inputs = self.inputs.to(memory_format=torch.channels_last)
        self.infer_forward = self._maybe_compile(self.infer_model)
        self.train_forward = self._maybe_compile(self.model) \
            if self.infer_model is not self.model else self.infer_forward
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-6)

    def _maybe_compile(self, model):
        return torch.compile(model) if self.entry['compile'] else model

    def autocast(self):
        dtype = DTYPES[self.entry['dtype']]
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

    def logits(self):
        self.infer_model.eval()
        with torch.no_grad(), self.autocast():
            if self.authors:
                out = self.infer_forward(self.inputs)
            else:
                out = self.infer_forward(self.inputs, mode='tensor')
        self.sync()
        return out

    def infer(self):
        self.logits()

    def train_step(self):
        self.model.train()
        samples = self.data_samples()
        with self.autocast():
            if self.authors:
                logits = self.train_forward(self.inputs)
                target = torch.stack([s.gt_sem_seg.data[0] for s in samples])
                loss = F.cross_entropy(logits.float(), target)
            else:
                losses = self.train_forward(self.inputs, samples, mode='loss')
                loss = sum(v for k, v in losses.items() if 'loss' in k)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()

    def flops(self):
        return count_flops(self.infer_model, self.inputs[:1])


def timed(step):
    """Wall time of ``step()`` in seconds, and the process's CPU time and
    page faults meanwhile (None where ``resource`` is missing)."""
    before = resource.getrusage(resource.RUSAGE_SELF) if resource else None
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    if before is None:
        return elapsed, None
    after = resource.getrusage(resource.RUSAGE_SELF)
    return elapsed, dict(
        user_s=after.ru_utime - before.ru_utime,
        kernel_s=after.ru_stime - before.ru_stime,
        page_faults=after.ru_minflt - before.ru_minflt)


def load_main_config(args):
    """The first entry's config (the authors' model takes its sizes)."""
    from mmengine.config import Config
    path = args.config.partition('@')[0]
    if path == AUTHORS:
        raise SystemExit('error: the first entry must be a config; '
                         '`authors` takes its sizes from it')
    return Config.fromfile(resolve_config_path(path)), path


def peak_memory_mb(entry, args, train):
    """Peak memory of one inference (or training) step, in a fresh process.
    """
    context = multiprocessing.get_context('spawn')
    with context.Pool(1) as pool:
        return pool.apply(_peak_memory_worker, (entry, args, train))


def _peak_memory_worker(entry, args, train):
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(entry, args)
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


def summary(times, usages, batch):
    """Latency statistics; with CPU usage, the kernel's share of the CPU
    time (on CPU mostly page faults: memory the allocator returned to the OS
    and took back) and the page faults per step."""
    median = statistics.median(times)
    result = dict(median_s=median, min_s=min(times), max_s=max(times),
                  images_per_s=batch / median)
    if usages and None not in usages:
        kernel = sum(u['kernel_s'] for u in usages)
        cpu = kernel + sum(u['user_s'] for u in usages)
        result['kernel_cpu_share'] = kernel / cpu if cpu else 0.
        result['page_faults'] = statistics.median(
            u['page_faults'] for u in usages)
    return result


def authors_parity(bench, args):
    """Largest |difference| between the authors' logits and ours (fp32, the
    authors' weights converted with ``wavemix_convert``)."""
    _, ours = build_model_from_config(load_main_config(args)[1])
    ours.load_state_dict(wavemix_convert(bench.model.state_dict()))
    ours.to(bench.device).eval()
    bench.model.eval()
    inputs = bench.inputs.contiguous()
    with torch.no_grad():
        return (bench.model(inputs) -
                ours(inputs, mode='tensor')).abs().max().item()


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = [args.config, *args.compare]
    entries = [parse_entry(spec, args) for spec in specs]
    load_main_config(args)  # fails early if the first entry is `authors`
    names = [e['spec'] for e in entries]
    if len(set(names)) != len(names):
        raise SystemExit(f'error: an entry appears twice in {names}')
    benches = [Bench(entry, args) for entry in entries]
    results = {
        b.name: dict(
            params=sum(p.numel() for p in b.model.parameters()),
            **{k: v for k, v in b.entry.items() if k != 'spec'})
        for b in benches
    }
    for bench in benches:
        if bench.authors:
            results[bench.name]['max_abs_diff_vs_ours'] = authors_parity(
                bench, args)
    if not args.no_flops:
        for bench in benches:
            results[bench.name]['flops'] = bench.flops()

    modes = [('inference', 'infer')] + ([('train', 'train_step')]
                                       if args.train else [])
    for mode, method in modes:
        times = {b.name: [] for b in benches}
        usages = {b.name: [] for b in benches}
        for round_ in range(args.warmup + args.repeat):
            for bench in benches:  # interleaved: one round of each entry
                elapsed, usage = timed(getattr(bench, method))
                if round_ >= args.warmup:
                    times[bench.name].append(elapsed)
                    usages[bench.name].append(usage)
        for name, values in times.items():
            results[name][mode] = summary(values, usages[name], args.batch)
    del benches
    if not args.no_flops:
        add_throughput(results, args)
    if not args.no_memory:
        for entry in entries:
            for mode, _ in modes:
                results[entry['spec']][mode]['peak_memory_mb'] = \
                    peak_memory_mb(entry, args, train=mode == 'train')
    return results


def gemm_peak_gflops(dtype, device, repeat=5):
    """Best throughput of a large GEMM, run as a 1x1 convolution in
    channels_last (oneDNN on CPU, cuDNN on GPU: the library the models'
    convolutions use), in GFLOP/s (2 per multiply-add)."""
    channels, size = 1024, 64
    x = torch.randn(1, channels, size, size, device=device, dtype=dtype)
    weight = torch.randn(channels, channels, 1, 1, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous(memory_format=torch.channels_last)
    best = float('inf')
    with torch.no_grad():
        for round_ in range(repeat + 1):
            start = time.perf_counter()
            F.conv2d(x, weight)
            if x.is_cuda:
                torch.cuda.synchronize()
            if round_:  # the first round is warm-up
                best = min(best, time.perf_counter() - start)
    return 2 * channels**2 * size**2 / best / 1e9


def add_throughput(results, args):
    """Achieved GFLOP/s of each entry's inference (2 x multiply-adds /
    median latency) and its share of the GEMM peak of its dtype."""
    dtypes = {r['dtype'] for r in results.values()}
    device = torch.device(args.device)
    peaks = {
        dtype: gemm_peak_gflops(DTYPES[dtype] or torch.float32, device)
        for dtype in dtypes
    }
    for r in results.values():
        if 'flops' not in r:
            continue
        achieved = 2 * r['flops'] * args.batch / r['inference'][
            'median_s'] / 1e9
        r['inference']['achieved_gflops'] = achieved
        r['inference']['gemm_peak_gflops'] = peaks[r['dtype']]
        r['inference']['share_of_peak'] = achieved / peaks[r['dtype']]
    return peaks


def environment(args):
    """What the numbers depend on, for the JSON file."""
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=cpu,
        cuda_device=torch.cuda.get_device_name()
        if args.device == 'cuda' else None,
        glibc_tunables=os.environ.get('GLIBC_TUNABLES'))


def format_table(results, args):
    h, w = args.shape
    head = (f'input {args.batch}x3x{h}x{w}, {args.device}, '
            f'{torch.get_num_threads()} threads')
    columns = ['entry', 'dtype', 'params (M)', 'GFLOPs', 'infer median (s)',
               'min-max (s)', 'images/s', '% of GEMM peak', 'infer peak MB']
    if args.train:
        columns += ['train step (s)', 'train peak MB']
    if args.device == 'cpu':
        columns.append('kernel CPU % (infer' + ('/train)' if args.train
                                                 else ')'))
    rows = []
    for name, r in results.items():
        inf = r['inference']
        path, _, options = name.partition('@')
        label = os.path.basename(path) + (f'@{options}' if options else '')
        row = [label, r['dtype'], f"{r['params'] / 1e6:.2f}",
               f"{r['flops'] / 1e9:.1f}" if 'flops' in r else '-',
               f"{inf['median_s']:.3f}",
               f"{inf['min_s']:.3f}-{inf['max_s']:.3f}",
               f"{inf['images_per_s']:.2f}",
               f"{100 * inf['share_of_peak']:.0f}%"
               if 'share_of_peak' in inf else '-',
               f"{inf.get('peak_memory_mb', float('nan')):.0f}"]
        if args.train:
            tr = r['train']
            row += [f"{tr['median_s']:.3f}",
                    f"{tr.get('peak_memory_mb', float('nan')):.0f}"]
        if args.device == 'cpu':
            row.append('/'.join(
                f"{100 * r[mode]['kernel_cpu_share']:.0f}%"
                if 'kernel_cpu_share' in r[mode] else '-'
                for mode in ('inference', 'train') if mode in r))
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows))
              for i, c in enumerate(columns)]
    lines = [head, '  '.join(c.ljust(wd) for c, wd in zip(columns, widths))]
    lines += ['  '.join(v.ljust(wd) for v, wd in zip(r, widths)) for r in rows]
    peaks = {r['dtype']: r['inference']['gemm_peak_gflops']
             for r in results.values() if 'gemm_peak_gflops' in r['inference']}
    if peaks:
        lines.append('GEMM peak (1x1 conv, channels_last): ' + ', '.join(
            f'{dtype} {gflops:.0f} GFLOP/s'
            for dtype, gflops in peaks.items()))
    for name, r in results.items():
        if 'max_abs_diff_vs_ours' in r:
            lines.append(f"{name}: max |authors' logits - ours| = "
                         f"{r['max_abs_diff_vs_ours']:.2e} (fp32)")
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
            json.dump(
                dict(
                    settings=vars(args),
                    environment=environment(args),
                    results=results),
                f,
                indent=2)


if __name__ == '__main__':
    main()
