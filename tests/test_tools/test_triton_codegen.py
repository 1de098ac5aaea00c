# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/analysis_tools/triton_codegen.py: the Triton kernels compiled for
an H100 (sm_90), and their products for other GPUs, on this CPU, and what
their code does that speed depends on."""

import pytest
import torch

from .demo_data import tool_module

triton = pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')


@pytest.fixture(scope='module')
def tool():
    module = tool_module('analysis_tools/triton_codegen.py')
    try:  # a kernel of no interest, to see that CUDA code can be made here
        kernel, args, kwargs = module.launches(
            64, 64, torch.float16)['haar analysis (nchw, packed level)']
        module.compile_launch(kernel, args, kwargs, arch=90)
    except Exception as error:  # e.g. a Triton without its CUDA backend
        pytest.skip(f'this Triton cannot compile for CUDA here: {error!r}')
    return module


@pytest.fixture(scope='module')
def launches(tool):
    return tool.launches(1024, 2048, torch.float16)


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
@pytest.mark.parametrize('step', ['analysis', 'synthesis'])
def test_haar_kernels_move_fp16_in_vectors(tool, launches, step, layout):
    """Each 16-bit scalar access would move an eighth of a 16-byte one: in
    NCHW the column pairs, in channels_last the three high bands of a run of
    channels are loaded (stored) as one contiguous run."""
    (_, summary), = tool.compile_launch(
        *launches[f'haar {step} ({layout}, packed level)'], arch=90)
    for accesses in (summary['global_loads'], summary['global_stores']):
        assert accesses and all(
            int(width[:-1]) >= 8 for width in accesses), summary
    assert summary['stack_bytes'] == 0, summary  # nothing spilled


@pytest.mark.parametrize('name', [
    'linear_gelu (finest level)',
    'linear_gelu + pre-activation (finest level, training)'
])
def test_linear_gelu_is_one_pipelined_loop_of_tensor_core_products(
        tool, launches, name):
    """The concatenation's two parts in one K loop of asynchronous copies
    and wgmma products, for every tile config the tuner tries (also where
    training stores the GELU's input)."""
    compiled = tool.compile_launch(*launches[name], arch=90)
    # those that fit its 512 hidden channels (not the 32-wide ones)
    assert len(compiled) == len(
        tool.level_mlp_triton._linear_gelu_kernel.configs) - 2
    assert {config['BN'] for config, _ in compiled} == {64, 128, 256}
    for config, summary in compiled:
        assert summary['loops'] == 1, (config, summary)
        assert summary['async_copies'] and summary['mma'] and all(
            name.startswith('wgmma') for name in summary['mma']), summary
        assert summary['shared_bytes'] <= 227 * 1024  # an H100's most
    table = tool.format_table({'linear_gelu': compiled},
                              tool.parse_args([]))
    assert 'sm_90' in table and "'BM': 128" in table


def test_tma_transposed_convolution_copies_by_the_tma(tool, launches):
    """Its operands come by tensor-memory copies into one pipelined loop
    of wgmma products, for every tile config the tuner tries."""
    name = 'conv_transpose_k4s2_tma (finest level)'
    if name not in launches:
        pytest.skip('this Triton has no host tensor descriptors (>= 3.4)')
    compiled = tool.compile_launch(*launches[name], arch=90)
    assert len(compiled) == len(
        tool.level_mlp_triton._conv_transpose_tma_kernel.configs)
    for config, summary in compiled:
        assert summary['loops'] == 1, (config, summary)
        assert set(summary['async_copies']) == {'tma'}, (config, summary)
        assert all(mma.startswith('wgmma') for mma in summary['mma'])
        assert summary['shared_bytes'] <= 227 * 1024


def test_gelu_backward_moves_vectors(tool, launches):
    """Its loads and its stores of the gradient are 16-byte; the one store
    narrower than that writes the partial column sums."""
    (_, summary), = tool.compile_launch(
        *launches['gelu backward + bias grad (finest level, training)'],
        arch=90)
    assert set(summary['global_loads']) == {'16B'}, summary
    stores = dict(summary['global_stores'])
    assert stores.pop('16B') >= 2 and sum(stores.values()) <= 1, summary
    assert summary['stack_bytes'] == 0, summary  # nothing spilled


def test_bias_grad_loads_vectors_and_stores_only_its_sums(tool, launches):
    """The bias gradient alone (the kernel without its GELU): the gradient
    comes in 16-byte loads, only the partial column sums are stored."""
    (_, summary), = tool.compile_launch(
        *launches['bias grad (block reduction, training)'], arch=90)
    assert set(summary['global_loads']) == {'16B'}, summary
    assert sum(dict(summary['global_stores']).values()) <= 1, summary
    assert summary['stack_bytes'] == 0, summary


def test_norm_residual_pass_moves_vectors_without_divisions(tool, launches):
    """The block output's BatchNorm and residual in training: the input,
    the residual and the output move as 16-byte vectors, the channel of
    each column comes without any 64-bit division (the kernel before took
    one a pixel), and nothing spills."""
    (_, summary), = tool.compile_launch(*launches[
        'add_bias_residual_ with scale (block output BatchNorm, training)'],
                                        arch=90)
    loads = dict(summary['global_loads'])
    assert loads.pop('16B') >= 2 and set(summary['global_stores']) == {
        '16B'}, summary
    assert summary['int64_divisions'] == 0, summary
    assert summary['stack_bytes'] == 0, summary


def test_matmul_add_moves_vectors_into_tensor_core_products(tool, launches):
    """A memory-bound GEMM (K = 64): its operands come by 16-byte
    asynchronous copies, the added matrix and the result move as 16-byte
    vectors, and no tile the tuner tries spills."""
    compiled = tool.compile_launch(
        *launches['matmul_add (block input gradient, training)'], arch=90)
    assert {config['BN'] for config, _ in compiled} == {64, 128, 256}
    for config, summary in compiled:
        assert set(summary['global_loads']) == {'16B'}, (config, summary)
        assert set(summary['global_stores']) == {'16B'}, (config, summary)
        assert summary['async_copies'] and all(
            name.startswith('wgmma') for name in summary['mma']), summary
        assert summary['stack_bytes'] == 0, (config, summary)


# compute capability: the products' instruction, a block's most shared
# memory in KiB, and whether every tile config the tuner tries fits in it
TENSOR_CORES = {
    80: ('mma.sync', 163, True),  # A100, the paper's GPU
    100: ('tcgen05.mma', 227, True),  # B200
    120: ('mma.sync', 99, False),  # RTX 50
}


@pytest.mark.parametrize('arch', sorted(TENSOR_CORES))
@pytest.mark.parametrize('name', [
    'linear_gelu (finest level)', 'conv_transpose_k4s2 (finest level)',
    'matmul_add (block input gradient, training)'
])
def test_products_run_on_other_gpus_tensor_cores(tool, launches, name, arch):
    """On an A100 (sm_80), a B200 (sm_100) and an RTX 50 (sm_120) the
    products are those GPUs' tensor-core instructions (the wgmma of the
    sm_90 tests is Hopper's), fed by asynchronous copies, for every tile
    config the tuner tries. On sm_120 some configs need more shared memory
    than its 99 KiB a block: Triton's tuner leaves those out at their
    launch, and at least three remain."""
    instruction, shared_kib, all_fit = TENSOR_CORES[arch]
    compiled = tool.compile_launch(*launches[name], arch=arch)
    assert len(compiled) >= 3
    for config, summary in compiled:
        assert summary['mma'] and all(
            mma.startswith(instruction) for mma in summary['mma']), summary
        assert summary['async_copies'], (config, summary)
    fitting = [
        config for config, summary in compiled
        if summary['shared_bytes'] <= shared_kib * 1024
    ]
    assert len(fitting) == len(compiled) if all_fit else len(fitting) >= 3


@pytest.mark.parametrize('name', [
    'accuracy counts (head logits, training)',
    'focal loss log_softmax_gather forward (training)',
    'focal loss log_softmax_gather backward (training)'
])
def test_head_logits_kernels_walk_each_pixels_classes(tool, launches, name):
    """The kernels over the head's 19-class logits compile for sm_90 with
    each thread walking its pixel's classes in a loop: no reduction across
    a warp's lanes (no shuffles), one pixel's 64-bit index arithmetic a
    thread, few registers (many threads in flight, for a memory-bound
    kernel) and nothing spilled (the [pixels, classes] tiles of session 16
    had 320-480 shuffles, 53-101 64-bit divisions and 138-206 registers);
    the focal loss's backward stores the logits' gradient in their 16-bit
    dtype."""
    (_, summary), = tool.compile_launch(*launches[name], arch=90)
    assert summary['global_loads'] and summary['stack_bytes'] == 0, summary
    assert summary['loops'] >= 1 and summary['shuffles'] == 0, summary
    assert summary['int64_divisions'] <= 2, summary
    assert summary['registers'] <= 64, summary
    if 'backward' in name:
        assert set(summary['global_stores']) == {'2B'}, summary


def test_registers_and_spills_are_reported(tool, launches):
    """The largest tile of linear_gelu holds a 128 x 256 float32
    accumulator in 256 threads (128 registers each for it alone, of at most
    255; with Triton 3.6 and 3.9 it spills); a 64 x 64 tile needs far fewer
    and spills nothing."""
    by_config = {
        (config['BM'], config['BN']): summary
        for config, summary in tool.compile_launch(
            *launches['linear_gelu (finest level)'], arch=90)
    }
    large, small = by_config[128, 256], by_config[64, 64]
    assert 128 < large['registers'] <= 255
    assert small['registers'] < large['registers'] - 64
    assert small['stack_bytes'] == 0
