# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Time a config's WaveMix level MLPs for inference on a GPU, one row per
level size: the layers (as ``prepare_for_inference(fuse_mlp=False)`` runs
them) against :class:`FusedLevelMLP` with each of its upsampling kernels,
and with ``--sweep`` each Triton kernel at each tile size against
cuBLAS/cuDNN doing the same product.

The level sizes and inputs come from one forward of the model (BatchNorm
folded, channels_last, batch 1) at ``--shape`` under autocast. On CUDA each
candidate is recorded as a CUDA graph and timed by GPU events over 10
replays (in a prepared model the level MLPs run inside CUDA graphs: launch
costs do not count); rounds are interleaved across candidates. On CPU the
fused modules run the layers (their kernels are for CUDA), so the rows only
show the tool works. Every candidate's largest difference from the layers'
output is reported.

Example:
    python tools/analysis_tools/benchmark_level_mlp.py \
        configs/wavemix/wavemix_256x16_l4_cityscapes.py --device cuda \
        --shape 1024 2048 --sweep --json work_dirs/level_mlp.json
"""
import argparse
import copy
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.accel import (FusedLevelMLP, fuse_norm_layers,
                                        pointwise_convs_as_gemm)
from mmseg_wavemix.models.accel.fused_upsample import UPSAMPLE_KERNELS
from mmseg_wavemix.models.backbones.wavemix_block import WaveletLevelMLP
from mmseg_wavemix.ops import level_mlp_triton
from mmseg_wavemix.utils.analysis import (add_timing_args,
                                          build_model_from_config, write_json)
from mmseg_wavemix.utils.cli import input_errors_in_one_line, positive_int

DTYPES = dict(fp16=torch.float16, bf16=torch.bfloat16)
# (BM, BN, BK, num_warps, num_stages) tried by --sweep
SWEEP = ((128, 128, 64, 4, 3), (128, 128, 64, 4, 4), (128, 128, 64, 8, 3),
         (128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (128, 256, 64, 8, 4),
         (256, 128, 64, 8, 3), (256, 128, 64, 8, 4), (128, 128, 32, 4, 4),
         (128, 128, 32, 8, 5), (128, 256, 32, 8, 4), (256, 128, 32, 8, 4),
         (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 256, 64, 4, 3),
         (64, 256, 64, 8, 4), (128, 128, 128, 8, 3), (128, 256, 128, 8, 2),
         (256, 128, 128, 8, 2), (128, 128, 128, 4, 3), (64, 64, 64, 4, 4),
         (128, 64, 64, 4, 3), (64, 128, 64, 4, 3), (256, 64, 64, 8, 4))
# (BH, BW, BN, BK, num_warps, num_stages) of the TMA transposed convolution:
# BH x BW input pixels a tile
SWEEP_TMA = ((8, 16, 256, 64, 8, 3), (8, 16, 256, 64, 8, 4),
             (8, 16, 128, 64, 4, 4), (8, 16, 128, 64, 8, 4),
             (16, 16, 128, 64, 8, 3), (16, 8, 256, 64, 8, 3),
             (4, 16, 256, 64, 4, 4), (8, 8, 256, 64, 4, 4),
             (8, 8, 128, 64, 4, 4), (8, 16, 128, 32, 4, 5),
             (16, 16, 256, 64, 8, 2), (4, 32, 256, 64, 8, 3))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark the WaveMix level MLPs for inference')
    parser.add_argument('config')
    parser.add_argument('--shape', type=positive_int, nargs=2,
                        default=(1024, 2048), metavar=('H', 'W'),
                        help='input size (default: 1024 2048)')
    parser.add_argument('--dtype', choices=list(DTYPES), default='fp16',
                        help='autocast dtype (default: fp16)')
    parser.add_argument('--sweep', action='store_true',
                        help='also time each Triton kernel at each tile size '
                        '(CUDA; a minute or two of compilation)')
    add_timing_args(parser, repeat=10, warmup=3)
    args = parser.parse_args(argv)
    if args.sweep and args.device != 'cuda':
        parser.error('--sweep times Triton kernels on a GPU: add --device '
                     'cuda')
    return args


def level_cases(model, inputs, dtype):
    """One level MLP per distinct level size and its inputs (x, residual,
    coarser) in one forward of ``model`` under autocast."""
    cases = {}

    def record(module, args, kwargs):
        x, residual, coarser = (list(args) + [None, None])[:3]
        residual = kwargs.get('residual', residual)
        coarser = kwargs.get('coarser', coarser)
        key = (tuple(x.shape),
               None if coarser is None else coarser.shape[1])
        if key not in cases:
            cases[key] = (module, tuple(
                None if t is None else t.detach().clone()
                for t in (x, residual, coarser)))

    handles = [
        m.register_forward_pre_hook(record, with_kwargs=True)
        for m in model.modules() if isinstance(m, WaveletLevelMLP)
    ]
    with torch.no_grad(), torch.autocast(inputs.device.type, dtype=dtype):
        model(inputs, mode='tensor')
    for handle in handles:
        handle.remove()
    return cases


def case_name(x, coarser):
    n, c, h, w = x.shape
    extra = '' if coarser is None else f'+{coarser.shape[1]}'
    return f'{c}{extra}ch {h}x{w}'


class Timer:
    """Median time of a call: GPU time of CUDA-graph replays on CUDA, wall
    time on CPU; ``rounds`` interleaves the calls added to it."""

    REPLAYS = 10

    def __init__(self, device):
        self.cuda = device.type == 'cuda'
        self.calls = {}

    def add(self, name, fn):
        """Record ``fn`` (run once first: kernels tuned outside the graph);
        an error is returned, not raised (a tile too large, say)."""
        try:
            fn()
            if self.cuda:
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    fn()
                fn = graph.replay
        except Exception as e:  # noqa: BLE001 (reported in its row)
            return f'{type(e).__name__}: {str(e).splitlines()[0][:120]}'
        self.calls[name] = fn
        return None

    def _once(self, fn):
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        for _ in range(self.REPLAYS):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / self.REPLAYS

    def rounds(self, repeat, warmup):
        times = {name: [] for name in self.calls}
        for round_ in range(warmup + repeat):
            for name, fn in self.calls.items():
                ms = self._once(fn)
                if round_ >= warmup:
                    times[name].append(ms)
        self.calls.clear()
        return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def candidates(mlp):
    """The level MLP as the layers and fused, each a module computing
    ``(x, residual, coarser)``."""
    layers = pointwise_convs_as_gemm(copy.deepcopy(mlp))
    return dict(layers=layers, **{
        f'fused {kernel}': FusedLevelMLP(copy.deepcopy(mlp), kernel)
        for kernel in UPSAMPLE_KERNELS
    })


def time_case(mlp, inputs, dtype, args, timer):
    """Microseconds per call of each candidate and its largest difference
    from the layers' output."""
    x, residual, coarser = inputs
    device = x.device.type
    outputs, errors, rows = {}, {}, {}
    for name, module in candidates(mlp).items():

        def call(module=module):
            with torch.no_grad(), torch.autocast(device, dtype=dtype):
                return module(x, residual, coarser)

        outputs[name] = call().float()
        errors[name] = timer.add(name, call)
    times = timer.rounds(args.repeat, args.warmup)
    for name, out in outputs.items():
        rows[name] = dict(
            us=times.get(name),
            max_abs_diff=(out - outputs['layers']).abs().max().item())
        if errors[name]:
            rows[name]['error'] = errors[name]
    return rows


def sweep_case(mlp, inputs, dtype, args, timer):
    """Each Triton kernel at each tile size in ``SWEEP`` (``SWEEP_TMA`` for
    the TMA kernel, where it applies) and the cuBLAS or cuDNN product it
    replaces (``cublas fc1``: over the concatenation, without the GELU;
    ``cudnn conv_transpose``: without bias and residual): microseconds,
    fastest first (``us``), and the tile sizes that failed (``failed``: too
    large for shared memory, say)."""
    x, residual, coarser = (t if t is None else t.to(dtype) for t in inputs)
    _, _, (w1, b1), w2, b2, upsample, bt = FusedLevelMLP(
        mlp, 'triton')._weights(dtype)
    wt = upsample['triton']
    with torch.no_grad():
        hidden = level_mlp_triton.linear_gelu(x, coarser, w1, b1)
        ff = F.conv2d(hidden, w2, b2).contiguous(
            memory_format=torch.channels_last)
    cat = x if coarser is None else torch.cat((x, coarser), 1)
    weight1 = mlp.fc1.weight.to(dtype)
    weight_t = mlp.upsample.weight.to(dtype)

    def product(config, kernel):
        if kernel == 'linear_gelu':
            return level_mlp_triton.linear_gelu(x, coarser, w1, b1,
                                                config=config)
        return getattr(level_mlp_triton, kernel)(ff, wt, bt, residual,
                                                 config=config)

    sweeps = [('linear_gelu', 'cublas fc1', lambda: F.conv2d(cat, weight1),
               SWEEP),
              ('conv_transpose_k4s2', 'cudnn conv_transpose',
               lambda: F.conv_transpose2d(ff, weight_t, stride=2, padding=1),
               SWEEP)]
    if level_mlp_triton.tma_applies(ff, wt):
        sweeps.append(('conv_transpose_k4s2_tma', 'cudnn conv_transpose',
                       sweeps[-1][2], SWEEP_TMA))
    results = {}
    for kernel, reference_name, reference, configs in sweeps:
        failed = {}
        timer.add(reference_name, reference)
        for config in configs:
            names = ('BH', 'BW') if len(config) == 6 else ('BM', )
            config = dict(zip((*names, 'BN', 'BK', 'num_warps', 'num_stages'),
                              config))
            name = 'x'.join(str(config[k]) for k in (*names, 'BN', 'BK')) + \
                f' w{config["num_warps"]} s{config["num_stages"]}'
            error = timer.add(name, partial(product, config, kernel))
            if error:
                failed[name] = error
        times = timer.rounds(args.repeat, args.warmup)
        results[kernel] = dict(
            us=dict(sorted(times.items(), key=lambda kv: kv[1])),
            failed=failed)
    return results


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.backends.cudnn.benchmark = True  # as tools/test.py
    _, model = build_model_from_config(args.config)
    model = fuse_norm_layers(model.to(device).eval())
    model.to(memory_format=torch.channels_last)
    inputs = torch.randn(1, 3, *args.shape, device=device).contiguous(
        memory_format=torch.channels_last)
    timer = Timer(device)
    results = {}
    for mlp, case in level_cases(model, inputs, dtype).values():
        name = case_name(case[0], case[2])
        results[name] = dict(candidates=time_case(mlp, case, dtype, args,
                                                  timer))
        if args.sweep:
            results[name]['sweep'] = sweep_case(mlp, case, dtype, args, timer)
        print(format_case(name, results[name]), flush=True)
    return results


def format_case(name, result):
    lines = [name]
    for candidate, row in result['candidates'].items():
        us = row['us']
        lines.append(f'  {candidate:16s} ' +
                     (f'{us:9.1f} us' if us is not None else '   failed   ') +
                     f'  max |diff| {row["max_abs_diff"]:.2e}' +
                     (f'  {row["error"]}' if 'error' in row else ''))
    for kernel, sweep in result.get('sweep', {}).items():
        top = list(sweep['us'].items())[:4]
        lines.append(f'  {kernel}: ' + ', '.join(f'{config} {us:.1f} us'
                                                 for config, us in top) +
                     f' ({len(sweep["failed"])} tile sizes failed)')
    return '\n'.join(lines)


@input_errors_in_one_line
def main(argv=None):
    args = parse_args(argv)
    print(f'level MLPs of {args.config} at 1x3x{args.shape[0]}x'
          f'{args.shape[1]}, {args.dtype}, {args.device} (median of '
          f'{args.repeat}, us per call)')
    results = run(args)
    if args.json:
        environment = dict(torch=torch.__version__)
        if args.device == 'cuda':
            environment.update(cuda=torch.version.cuda,
                               cuda_device=torch.cuda.get_device_name())
        write_json(args.json, dict(settings=vars(args),
                                   environment=environment, results=results))
    return results


if __name__ == '__main__':
    main()
