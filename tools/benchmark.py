# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Benchmark models from their configs: parameters, FLOPs, inference latency,
images/s, training-step time and peak memory, for several models in one run.

Each model is an entry ``CONFIG[@OPTIONS]``: a config (``mmseg::`` paths
work) or ``authors`` (the authors' ``wavemix==0.2.4`` model with the sizes of
the first config, see ``--authors-package``), and comma-separated options
that override the global flags for that entry: ``fp32``, ``bf16``, ``fp16``
(autocast), ``channels_last``, ``fuse_norm`` (BatchNorm folded into the
convolutions before it, for inference), ``fold_classifier`` (a WaveMixHead's
classifier folded into its last transposed convolution, for inference; FLOPs
are counted on the model that runs), ``fuse_activation`` (each WaveMix level's
GELU inside its first convolution, for inference on CPU), ``fast`` (the
inference model of ``tools/test.py --fast``, from ``prepare_for_inference``),
``no_fuse_mlp`` (with ``fast``: the level MLPs and upsamplings as layers on
CUDA, ``prepare_for_inference(fuse_mlp=False)``), ``fast_train`` (the
training model of ``FastTrainingHook``, from
``prepare_for_training``), ``cuda_graphs`` (with ``fast_train``: its
training forward and backward replayed as CUDA graphs; peak memory is then
the allocator's reserved memory, which holds the graphs' activations: the
larger of the recording step's and a replayed step's, the latter also
alone, as ``replay_peak_memory_mb``),
``keep_levels`` (with ``fast_train``: WaveMix blocks keep their wavelet levels
for backward, ``prepare_for_training(keep_levels=True)``), ``loop`` (the
training step as ``tools/train.py``'s loop runs it, data loading aside:
``model.train_step`` with the config's optimizer wrapper, AMP on CUDA where it
is an ``AmpOptimWrapper``, its ``NonFiniteLossHook``, a batch of uint8 images
and labels as the config packs them (uint8 in the recipe) on the host through
the data preprocessor, and each logged value read on the host; no dtype
option),
``compile`` (torch.compile; with ``fast``, the CUDA graphs of
``prepare_for_inference(compile=True)``) and ``with_cp`` (the backbone's
gradient checkpointing). One config may appear with several option sets.

An entry that fails (to build, or in one of its steps: out of memory, an
operation its model does not support) is reported in its row and in the JSON
(``errors``: step -> message); the others are measured as usual.

Timed runs are interleaved across entries (round r of every entry, then
round r + 1, ...) so that ratios hold on a noisy machine; the JSON is
written as results come. Peak memory is measured in fresh processes (on
CUDA one per entry, on CPU one per entry and step): the CUDA allocator's
peak on GPU; on CPU (Linux) the rise of the peak resident set size (VmHWM,
reset after the model is built) over the resident size of the built model.
For ``authors`` the largest difference from our model's logits (fp32, same
weights through ``wavemix_convert``) is reported too. On CPU the kernel's
share of the CPU time of the timed steps is reported (JSON:
``kernel_cpu_share``, ``page_faults`` per step): mostly page faults, which
glibc's allocator causes by returning large blocks to the OS after each
step; code that allocates less pays less, and how much a fault costs varies
between machines.
On CUDA the host's share of the step is reported (JSON: ``host_share``): the
time until the host had launched all of a step's work over the step's time;
near 100% the device waits on the host (Python, launches), and less work on
the device would not make the step faster.

Example:
    python tools/benchmark.py configs/wavemix/wavemix_256x16_l4_cityscapes.py \
        --compare configs/wavemix/wavemix_256x16_l4_cityscapes.py@bf16,fast \
        authors \
        mmseg::segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py \
        --authors-package work_dirs/authors_wavemix \
        --shape 512 1024 --train --json work_dirs/benchmark.json
"""
import argparse
import gc
import os
import sys

import torch

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.utils.analysis import add_timing_args, write_json
from mmseg_wavemix.utils.benchmark import (DTYPES, Bench, authors_parity,
                                           environment, gemm_peak_gflops,
                                           load_main_config, parse_entry,
                                           peak_memory, summary, timed)
from mmseg_wavemix.utils.checks import describe
from mmseg_wavemix.utils.cli import input_errors_in_one_line, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark models')
    parser.add_argument(
        'config', help='first entry: CONFIG[@OPTIONS] (see the docstring)')
    parser.add_argument(
        '--compare', nargs='+', default=[],
        help='more entries, same run: CONFIG[@OPTIONS] or authors[@OPTIONS]')
    parser.add_argument(
        '--shape', type=positive_int, nargs=2, default=(512, 1024),
        metavar=('H', 'W'), help='input size (default: 512 1024)')
    parser.add_argument('--batch', type=positive_int, default=1,
                        help='batch size')
    parser.add_argument(
        '--train', action='store_true', help='also time a training step')
    parser.add_argument('--dtype', choices=DTYPES, default='fp32',
                        help='autocast dtype (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--fuse-norm', action='store_true',
                        help='fold BatchNorm into convolutions (inference)')
    parser.add_argument('--fold-classifier', action='store_true',
                        help="fold a WaveMixHead's classifier into its last "
                        'transposed convolution (inference)')
    parser.add_argument('--fuse-activation', action='store_true',
                        help="run each WaveMix level's GELU inside its first "
                        'convolution (inference)')
    parser.add_argument('--fast', action='store_true',
                        help='the inference model of tools/test.py --fast '
                        '(FastInferenceHook)')
    parser.add_argument('--no-fuse-mlp', action='store_true',
                        help='with --fast: the WaveMix level MLPs as layers '
                        '(CUDA), not fused')
    parser.add_argument('--fast-train', action='store_true',
                        help='the training model of FastTrainingHook')
    parser.add_argument('--cuda-graphs', action='store_true',
                        help='with --fast-train: training forward and '
                        'backward as CUDA graphs')
    parser.add_argument('--keep-levels', action='store_true',
                        help='with --fast-train: WaveMix blocks keep their '
                        'wavelet levels for backward')
    parser.add_argument('--loop', action='store_true',
                        help="the training step as tools/train.py's loop "
                        "runs it: the config's optimizer wrapper (AMP on "
                        'CUDA), a batch from the host through the data '
                        'preprocessor, the logged values read')
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
    parser.add_argument(
        '--no-cudnn-benchmark', action='store_true',
        help="leave cuDNN's algorithm search off (tools/train.py and "
        "tools/test.py turn it on: mmseg's env_cfg)")
    return parser.parse_args(argv)


def progress(line):
    """A line on stderr as the run goes (the results come last, on
    stdout)."""
    print(line, file=sys.stderr, flush=True)


def attempt(result, step, fn):
    """``fn()``, or None with the failure kept in ``result['errors']``."""
    try:
        return fn()
    except Exception as e:  # noqa: B902  (any failure is reported)
        result.setdefault('errors', {})[step] = describe(e)[:300]
        return None


def run(args, save=None):
    """Measure the entries of ``args``; ``save(results)``, where given, is
    called with the results so far after the timed rounds and after each
    entry's peak memory (a run cut short keeps what it measured)."""
    save = save or (lambda results: None)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    specs = [args.config, *args.compare]
    entries = [parse_entry(spec, args) for spec in specs]
    load_main_config(args)  # fails early if the first entry is `authors`
    names = [e['spec'] for e in entries]
    if len(set(names)) != len(names):
        raise SystemExit(f'error: an entry appears twice in {names}')
    results = {
        e['spec']: {k: v for k, v in e.items() if k != 'spec'}
        for e in entries
    }
    benches = []
    for entry in entries:
        result = results[entry['spec']]
        bench = attempt(result, 'build', lambda: Bench(entry, args))
        if bench is not None:
            result['params'] = sum(p.numel() for p in bench.model.parameters())
            benches.append(bench)
    for bench in benches:
        result = results[bench.name]
        if bench.authors:
            diff = attempt(result, 'parity',
                           lambda: authors_parity(bench, args))
            if diff is not None:
                result['max_abs_diff_vs_ours'] = diff
        if not args.no_flops:
            progress(f'FLOPs: {bench.name}')
            flops = attempt(result, 'flops', bench.flops)
            if flops is not None:
                result['flops'] = flops

    modes = [('inference', 'infer')]
    if args.train:
        modes.append(('train', 'train_step'))
    for mode, method in modes:
        times = {b.name: [] for b in benches}
        usages = {b.name: [] for b in benches}
        running = list(benches)
        for round_ in range(args.warmup + args.repeat):
            for bench in list(running):  # interleaved: a round of each
                measured = attempt(results[bench.name], mode,
                                   lambda: timed(getattr(bench, method),
                                                 bench))
                progress(f'{mode} round {round_ + 1}/'
                         f'{args.warmup + args.repeat}'
                         f'{" (warm-up)" if round_ < args.warmup else ""}: '
                         f'{bench.name}: ' + (
                             'failed: ' + results[bench.name]['errors'][mode]
                             if measured is None else f'{measured[0]:.3f} s'))
                if measured is None:
                    running.remove(bench)
                elif round_ >= args.warmup:
                    times[bench.name].append(measured[0])
                    usages[bench.name].append(measured[1])
        for bench in running:
            results[bench.name][mode] = summary(times[bench.name],
                                                usages[bench.name],
                                                args.batch, args.device)
    # Peak memory is measured in fresh processes: this one's models and the
    # CUDA allocator's cache would leave them too little of the GPU.
    benches = bench = running = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not args.no_flops:
        add_throughput(results, args)
    save(results)
    if not args.no_memory:
        for entry in entries:
            result = results[entry['spec']]
            measured = [mode for mode, _ in modes if mode in result]
            if not measured:
                continue
            progress(f'{" and ".join(measured)} peak memory (a fresh '
                     f'process): {entry["spec"]}')
            peaks = attempt(result, 'peak memory',
                            lambda: peak_memory(entry, args, measured))
            for mode, peak in (peaks or {}).items():
                if isinstance(peak, str):  # that mode failed
                    result.setdefault('errors',
                                      {})[f'{mode} peak memory'] = peak
                else:
                    result[mode].update(peak)
            save(results)
    return results


def add_throughput(results, args):
    """Achieved GFLOP/s of each entry's inference (2 x multiply-adds /
    median latency) and its share of the GEMM peak of its dtype."""
    measured = [
        r for r in results.values() if 'flops' in r and 'inference' in r
    ]
    device = torch.device(args.device)
    peaks = {
        dtype: gemm_peak_gflops(DTYPES[dtype] or torch.float32, device)
        for dtype in {r['dtype'] for r in measured}
    }
    for r in measured:
        achieved = 2 * r['flops'] * args.batch / r['inference'][
            'median_s'] / 1e9
        r['inference']['achieved_gflops'] = achieved
        r['inference']['gemm_peak_gflops'] = peaks[r['dtype']]
        r['inference']['share_of_peak'] = achieved / peaks[r['dtype']]
    return peaks


def format_table(results, args):
    h, w = args.shape
    head = (f'input {args.batch}x3x{h}x{w}, {args.device}, '
            f'{torch.get_num_threads()} threads')
    columns = ['entry', 'dtype', 'params (M)', 'GFLOPs', 'infer median (s)',
               'min-max (s)', 'images/s', '% of GEMM peak', 'infer peak MB']
    if args.train:
        columns += ['train step (s)', 'train peak MB']
    if args.device == 'cpu':
        columns.append('kernel CPU % (infer/train)'
                       if args.train else 'kernel CPU % (infer)')
    else:
        columns.append('host % (infer/train)'
                       if args.train else 'host % (infer)')
    rows = []
    for name, r in results.items():
        path, _, options = name.partition('@')
        label = os.path.basename(path) + (f'@{options}' if options else '')
        if 'params' not in r:
            rows.append([label, r['dtype'], 'failed to build, see below'] +
                        [''] * (len(columns) - 3))
            continue
        inf = r.get('inference', {})
        row = [label, r['dtype'], f"{r['params'] / 1e6:.2f}",
               f"{r['flops'] / 1e9:.1f}" if 'flops' in r else '-']
        row += [f"{inf['median_s']:.3f}",
                f"{inf['min_s']:.3f}-{inf['max_s']:.3f}",
                f"{inf['images_per_s']:.2f}"] if inf else ['failed'] * 3
        row += [f"{100 * inf['share_of_peak']:.0f}%"
                if 'share_of_peak' in inf else '-',
                _memory(inf)]
        if args.train:
            tr = r.get('train')
            row += [f"{tr['median_s']:.3f}" if tr else 'failed', _memory(tr)]
        share = 'kernel_cpu_share' if args.device == 'cpu' else 'host_share'
        row.append('/'.join(
            f"{100 * r[mode][share]:.0f}%" if share in r.get(mode, {}) else
            '-' for mode in ('inference', 'train')
            if mode == 'inference' or args.train))
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows))
              for i, c in enumerate(columns)]
    lines = [head, '  '.join(c.ljust(wd) for c, wd in zip(columns, widths))]
    lines += ['  '.join(v.ljust(wd) for v, wd in zip(r, widths)) for r in rows]
    peaks = {r['dtype']: r['inference']['gemm_peak_gflops']
             for r in results.values()
             if 'gemm_peak_gflops' in r.get('inference', {})}
    if peaks:
        lines.append('GEMM peak (1x1 conv, channels_last): ' + ', '.join(
            f'{dtype} {gflops:.0f} GFLOP/s'
            for dtype, gflops in peaks.items()))
    for name, r in results.items():
        if 'max_abs_diff_vs_ours' in r:
            lines.append(f"{name}: max |authors' logits - ours| = "
                         f"{r['max_abs_diff_vs_ours']:.2e} (fp32)")
        for step, message in r.get('errors', {}).items():
            lines.append(f'{name}: {step} failed: {message}')
    return '\n'.join(lines)


def _memory(stats):
    if not stats or 'peak_memory_mb' not in stats:
        return '-'
    replay = stats.get('replay_peak_memory_mb')
    return f"{stats['peak_memory_mb']:.0f}" + (
        '' if replay is None else f' ({replay:.0f} replayed)')


@input_errors_in_one_line
def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but no CUDA device is '
                         'available')

    def save(results, finished=False):
        # `finished` false: written while the run goes on (peak memory, the
        # slowest part on a GPU, still being measured)
        if args.json:
            write_json(
                args.json,
                dict(
                    settings=vars(args),
                    environment=environment(args),
                    results=results,
                    finished=finished))

    results = run(args, save)
    print(format_table(results, args))
    save(results, finished=True)


if __name__ == '__main__':
    main()
