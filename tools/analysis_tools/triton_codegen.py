# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Compile the package's Triton kernels for a CUDA GPU on a machine without
one, and summarise the machine code each would run: the width of its global
loads and stores, its asynchronous copies and tensor-core instructions, its
loops, shared memory, registers and spills.

For a kernel change made where no GPU is at hand: whether the accesses of a
memory-bound kernel are vector accesses (a 16-bit scalar access moves an
eighth of what a 16-byte one does), whether a GEMM's K loop is one
software-pipelined loop of asynchronous copies and tensor-core products,
whether a tile's accumulator fits the registers or spills.
It says nothing of speed; only a GPU measures that
(``tools/gpu_checks.sh``).

The kernels get the arguments the package's own wrappers pass them for
WaveMix-256's tensors at 1024x2048 (``--shape``), given as tensors on the
``meta`` device; integers are specialised as Triton does at a launch (1 as a
constant, multiples of 16 as such), and the autotuned kernels are compiled
for each of their tile configs.

Example:
    python tools/analysis_tools/triton_codegen.py --arch 90 \
        --json work_dirs/codegen.json
"""
import argparse
import os
import re
import subprocess
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Dict, List

import torch

from mmseg_wavemix.ops import (accuracy, gelu_triton, haar_kernels,
                               haar_triton, level_mlp_triton,
                               log_softmax_gather, triton_support)
from mmseg_wavemix.utils.analysis import write_json
from mmseg_wavemix.utils.cli import positive_int

# Triton's pointer type of each dtype, as its signatures write it
_POINTER_TYPES = {
    torch.float16: '*fp16',
    torch.bfloat16: '*bf16',
    torch.float32: '*fp32',
    torch.int32: '*i32',
    torch.int64: '*i64'
}
_INSTRUCTIONS = re.compile(
    r'\b((?:ld|st)\.global(?:\.\w+)*|cp\.async\.bulk\.tensor(?:\.\w+)*|'
    r'cp\.async\.(?:ca|cg)\.shared\.global(?:\.\w+)*\s+\[[^]]+\],\s*'
    r'\[[^]]+\],\s*(?:0x[0-9a-f]+|\d+)|'
    r'wgmma\.mma_async(?:\.\w+)*|mma\.sync(?:\.\w+)*|'
    r'tcgen05\.mma(?:\.[\w:]+)*)')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Compile the Triton kernels for a CUDA GPU, no GPU '
        'needed, and summarise their machine code')
    parser.add_argument('--arch', type=int, default=90,
                        help='CUDA compute capability as one number: 90 '
                        '(H100/H200, the default), 80 (A100), 89, 100 (B200), '
                        '120 (RTX 50)')
    parser.add_argument('--shape', type=positive_int, nargs=2,
                        default=(1024, 2048), metavar=('H', 'W'),
                        help='image size (default: 1024 2048)')
    parser.add_argument('--dtype', choices=['fp16', 'bf16'], default='fp16')
    parser.add_argument('--json', help='write the summaries to this file')
    return parser.parse_args(argv)


class _Recorder:
    """Stands in for a Triton kernel: records each launch's arguments."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.launches: List[tuple] = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((args, kwargs))


@contextmanager
def replaced(module, name: str, value):
    """``module.name`` replaced by ``value`` while in effect."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield value
    finally:
        setattr(module, name, old)


def recording(module, name: str):
    """``module.name`` replaced by a :class:`_Recorder` while in effect."""
    return replaced(module, name, _Recorder(getattr(module, name)))


def _specialise(fn, args: tuple, kwargs: dict):
    """Triton's signature, constants and attributes for ``fn`` called with
    ``args`` (tensors, integers) and constexpr ``kwargs``, specialised as a
    launch would be."""
    names = fn.arg_names
    values = dict(zip(names, args), **kwargs)
    positional = set(names[:len(args)])
    signature, constants, attrs = {}, {}, {}
    for index, name in enumerate(names):
        value = values[name]
        key = (index, )
        if hasattr(value, 'block_shape'):  # a TMA descriptor
            block = ','.join(map(str, value.block_shape))
            signature[name] = \
                f'tensordesc<{_POINTER_TYPES[value.base.dtype][1:]}[{block}]>'
        elif isinstance(value, torch.Tensor):
            signature[name] = _POINTER_TYPES[value.dtype]
            if value.storage_offset() * value.element_size() % 16 == 0:
                attrs[key] = [['tt.divisibility', 16]]
        elif isinstance(value, bool) or name not in positional:
            signature[name] = 'constexpr'
            constants[key] = value
        elif value == 1:
            signature[name] = 'constexpr'
            constants[key] = 1
        else:
            signature[name] = 'i32' if -2**31 <= value < 2**31 else 'i64'
            if value % 16 == 0:
                attrs[key] = [['tt.divisibility', 16]]
    return signature, constants, attrs


def _resource_usage(cubin: bytes) -> Dict:
    """Registers per thread and stack bytes (spilled registers, mostly) of
    a compiled kernel, from ``cuobjdump -res-usage`` (shipped with Triton's
    CUDA backend); empty where that tool is missing."""
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), 'backends',
                        'nvidia', 'bin', 'cuobjdump')
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, '-res-usage', f.name],
                             capture_output=True, text=True).stdout
    found = re.search(r'REG:(\d+) STACK:(\d+)', out)
    return {} if found is None else dict(registers=int(found.group(1)),
                                         stack_bytes=int(found.group(2)))


def summarise(compiled) -> Dict:
    """What one compiled kernel runs, as instructions in its code: warp
    shuffles and 64-bit integer divisions, global accesses by the bytes each
    moves per thread, asynchronous copies by size (``tma``: tensor-memory
    copies), tensor-core instructions; and its
    loops, shared memory and launch options; its registers per thread and
    stack bytes (spills) where ``cuobjdump`` is at hand."""
    ptx, ttgir = compiled.asm['ptx'], compiled.asm['ttgir']
    loads, stores, copies, mma = Counter(), Counter(), Counter(), Counter()
    for found in _INSTRUCTIONS.findall(ptx):
        if found.startswith(('ld.', 'st.')):
            vector = re.search(r'\.v(\d)', found)
            bits = re.search(r'\.[bfsu](\d+)$', found)
            width = (int(vector.group(1)) if vector else 1) * int(
                bits.group(1)) // 8
            (loads if found.startswith('ld.') else stores)[width] += 1
        elif found.startswith('cp.async.bulk'):
            copies['tma'] += 1
        elif found.startswith('cp.async'):
            copies[int(found.rsplit(',', 1)[1], 0)] += 1
        else:
            mma[found.split('.')[0] + '.' + found.split('.')[-4]
                if found.startswith('wgmma') else found] += 1
    return dict(
        # a warp's lanes exchanging values: a reduction across the lanes
        shuffles=len(re.findall(r'\bshfl\.sync', ptx)),
        # 64-bit integer divisions, each a routine of many instructions
        int64_divisions=len(re.findall(r'\b(?:div|rem)\.[su]64', ptx)),
        global_loads={f'{w}B': n for w, n in sorted(loads.items())},
        global_stores={f'{w}B': n for w, n in sorted(stores.items())},
        async_copies={f'{w}B' if isinstance(w, int) else w: n
                      for w, n in sorted(copies.items(), key=str)},
        mma=dict(mma),
        loops=ttgir.count('scf.for'),
        shared_bytes=compiled.metadata.shared,
        num_warps=compiled.metadata.num_warps,
        num_stages=compiled.metadata.num_stages,
        **_resource_usage(compiled.asm['cubin']))


def compile_launch(kernel, args: tuple, kwargs: dict, arch: int) -> List:
    """Compile one recorded launch, for each config the tuner of an
    autotuned kernel tries for it; returns (config, summary) pairs."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    configs = [None]
    fn = kernel
    if isinstance(kernel, triton.runtime.Autotuner):
        configs, fn = kernel.configs, kernel.fn
        if kernel.early_config_prune is not None:  # those the tuner tries
            configs = kernel.early_config_prune(
                configs, dict(zip(fn.arg_names, args)), **kwargs)
    results = []
    for config in configs:
        constants = dict(kwargs)
        options = {}
        if config is not None:
            constants.update(config.kwargs)
            if config.pre_hook is not None:  # e.g. descriptors' blocks
                config.pre_hook(dict(zip(fn.arg_names, args), **constants))
            options = dict(num_warps=config.num_warps,
                           num_stages=config.num_stages)
        signature, constexprs, attrs = _specialise(fn, args, constants)
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs, attrs),
            target=GPUTarget('cuda', arch, 32),
            options=options)
        label = None if config is None else {**config.kwargs, **options}
        results.append((label, summarise(compiled)))
    return results


def _levels(height: int, width: int, dtype: torch.dtype):
    """Meta tensors of WaveMix-256/16 L4's finest level at an image size:
    the block input (at 1/4 of the image) and its packed level."""
    x = torch.empty(1, 64, height // 4, width // 4, dtype=dtype,
                    device='meta')
    return x, x.new_empty(1, 256, height // 8, width // 8)


def launches(height: int, width: int, dtype: torch.dtype) -> Dict:
    """The kernels' launches as the package's wrappers make them, by name:
    (kernel, args, constexpr kwargs)."""
    found = {}
    block_input, level = _levels(height, width, dtype)
    for layout in ('nchw', 'channels_last'):
        fmt = torch.channels_last if layout == 'channels_last' else \
            torch.contiguous_format
        x = block_input.contiguous(memory_format=fmt)
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        ll, highs, _ = haar_kernels._empty_bands(x, h, w, packed=True)
        for step in ('analysis', 'synthesis'):
            with recording(haar_triton, '_haar_kernel') as rec:
                if step == 'analysis':
                    haar_triton.analysis(x, ll, highs)
                else:
                    haar_triton.synthesis(ll, highs, x)
            found[f'haar {step} ({layout}, packed level)'] = (
                rec.kernel, *rec.launches[0])
    # the finest level MLP: 256 + 128 channels in, 512 hidden, 256 out
    a = level.contiguous(memory_format=torch.channels_last)
    coarser = a.new_empty(1, 128, *a.shape[-2:]).contiguous(
        memory_format=torch.channels_last)
    weight = a.new_empty(384, 512)
    bias = a.new_empty(512, dtype=torch.float32)
    with recording(level_mlp_triton, '_linear_gelu_kernel') as rec:
        level_mlp_triton.linear_gelu(a, coarser, weight, bias)
    found['linear_gelu (finest level)'] = (rec.kernel, *rec.launches[0])
    with recording(level_mlp_triton, '_linear_gelu_kernel') as rec:
        level_mlp_triton.linear_gelu(a, coarser, weight, bias,
                                     pre_activation=True)
    found['linear_gelu + pre-activation (finest level, training)'] = (
        rec.kernel, *rec.launches[0])
    weight = a.new_empty(4, 4, 256, 256)
    bias = a.new_empty(256, dtype=torch.float32)
    residual = a.new_empty(1, 256, 2 * a.shape[-2],
                           2 * a.shape[-1]).contiguous(
                               memory_format=torch.channels_last)
    with recording(level_mlp_triton, '_conv_transpose_kernel') as rec:
        level_mlp_triton.conv_transpose_k4s2(a, weight, bias, residual)
    found['conv_transpose_k4s2 (finest level)'] = (rec.kernel,
                                                   *rec.launches[0])
    if level_mlp_triton.TensorDescriptor is not None:
        # meta tensors are on no GPU: as if on one with a TMA
        with recording(level_mlp_triton, '_conv_transpose_tma_kernel') as \
                rec, replaced(level_mlp_triton, 'tma_applies',
                              lambda *args: True):
            level_mlp_triton.conv_transpose_k4s2_tma(a, weight, bias, residual)
        found['conv_transpose_k4s2_tma (finest level)'] = (rec.kernel,
                                                           *rec.launches[0])
    # training: the block's output BatchNorm and residual, one pass (and the
    # cuDNN upsampling's bias and residual in inference, the same kernel)
    out = residual.new_empty(residual.shape).contiguous(
        memory_format=torch.channels_last)
    with recording(level_mlp_triton, '_add_bias_residual_kernel') as rec:
        level_mlp_triton.add_bias_residual_(out, bias, residual, bias)
    found['add_bias_residual_ with scale (block output BatchNorm, '
          'training)'] = (rec.kernel, *rec.launches[0])
    # training: the finest level's hidden gradient (batch 1)
    hidden = a.new_empty(1, 512, *a.shape[-2:]).contiguous(
        memory_format=torch.channels_last)
    with recording(gelu_triton, '_gelu_backward_kernel') as rec, replaced(
            gelu_triton, 'applies', lambda *args: True):
        gelu_triton.gelu_backward_with_bias_grad_(hidden, hidden)
    found['gelu backward + bias grad (finest level, training)'] = (
        rec.kernel, *rec.launches[0])
    # training: the block reduction's bias gradient (64 channels)
    with recording(gelu_triton, '_gelu_backward_kernel') as rec:
        gelu_triton.bias_grad(
            block_input.new_empty(block_input[0, 0].numel(), 64))
    found['bias grad (block reduction, training)'] = (rec.kernel,
                                                      *rec.launches[0])
    # training: the block's input gradient, the reduction's (64 -> 256
    # channels) plus the residual's
    rows = block_input.new_empty(block_input[0, 0].numel(), 256)
    with recording(level_mlp_triton, '_matmul_add_kernel') as rec:
        level_mlp_triton.matmul_add(rows[:, :64], rows.new_empty(64, 256),
                                    rows)
    found['matmul_add (block input gradient, training)'] = (rec.kernel,
                                                            *rec.launches[0])
    # the head's logits (Cityscapes' 19 classes at the image size, batch 1)
    # and labels: acc_seg's counts, the focal loss's two passes (training)
    logits = a.new_empty(1, 19, height, width).contiguous(
        memory_format=torch.channels_last)
    labels = logits.new_empty(1, height, width, dtype=torch.int64)
    with recording(accuracy, '_accuracy_kernel') as rec:
        accuracy._triton_counts(logits, labels, 255)
    found['accuracy counts (head logits, training)'] = (rec.kernel,
                                                        *rec.launches[0])
    grad = labels.new_empty(labels.shape, dtype=torch.float32)
    for step in ('forward', 'backward'):
        with recording(log_softmax_gather, '_log_softmax_gather_kernel') as \
                rec, replaced(log_softmax_gather, 'applies',
                              lambda *args: True):
            if step == 'forward':
                log_softmax_gather.log_softmax_gather(logits, labels)
            else:
                log_softmax_gather.log_softmax_gather_backward(
                    grad, logits, labels)
        found[f'focal loss log_softmax_gather {step} (training)'] = (
            rec.kernel, *rec.launches[0])
    return found


def run(args) -> Dict:
    if os.environ.get('TRITON_INTERPRET') == '1':
        raise RuntimeError('unset TRITON_INTERPRET: the interpreter compiles '
                           'nothing')
    if not triton_support.available():
        raise RuntimeError(
            'no Triton >= 3.0 here (found '
            f'{triton_support.TOO_OLD or "none"}): pip install "triton>=3"')
    dtype = dict(fp16=torch.float16, bf16=torch.bfloat16)[args.dtype]
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # Triton's notes on its defaults
        for name, (kernel, call_args, kwargs) in launches(
                *args.shape, dtype).items():
            results[name] = compile_launch(kernel, call_args, kwargs,
                                           args.arch)
    return results


def format_table(results: Dict, args) -> str:
    lines = [f'Triton kernels compiled for sm_{args.arch}, {args.dtype}, '
             f'image {args.shape[0]}x{args.shape[1]}: instructions in the '
             'code (global loads/stores and asynchronous copies by the bytes '
             'each moves per thread), loops, shared memory']
    for name, compiled in results.items():
        for config, s in compiled:
            lines.append(f'{name}' + (f' {config}' if config else ''))
            lines.append(
                f'  loads {s["global_loads"]} stores {s["global_stores"]} '
                f'async copies {s["async_copies"]} mma {s["mma"]} loops '
                f'{s["loops"]} shared {s["shared_bytes"]} B shuffles '
                f'{s["shuffles"]} int64 divisions {s["int64_divisions"]}' +
                (f' registers {s["registers"]} stack {s["stack_bytes"]} B'
                 if 'registers' in s else ''))
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    print(format_table(results, args))
    if args.json:
        write_json(args.json, dict(settings=vars(args), results=results))


if __name__ == '__main__':
    main()
