# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import copy
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import revert_sync_batchnorm
from torch.utils._python_dispatch import TorchDispatchMode

from mmseg_wavemix.models.accel import (MemoryEfficientLevelMLP,
                                        batch_norm_add, conv_gelu_conv2d,
                                        keep_wavelet_levels,
                                        level_mlp_keeping_its_input,
                                        pointwise_convs_as_gemm)
from mmseg_wavemix.models.accel.memory_efficient import (
    _pointwise_input_grads, _WaveletLevelsFunction)
from mmseg_wavemix.models.backbones import WaveMix, WaveMixBlock
from mmseg_wavemix.models.backbones.wavemix_block import WaveletLevelMLP
from mmseg_wavemix.ops import haar_dwt_packed

BF16_EPS = torch.finfo(torch.bfloat16).eps


def saved_bytes(fn):
    """Bytes autograd keeps for backward while ``fn`` runs (each storage
    once), and fn's result."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def grads(fn, tensors, weight):
    return torch.autograd.grad((fn() * weight).sum(), tensors)


def trained_bn(channels, momentum=0.1):
    norm = nn.BatchNorm2d(channels, momentum=momentum)
    norm.weight.data.uniform_(0.5, 2).mul_(torch.randn(channels).sign())
    norm.bias.data.uniform_(-1, 1)
    return norm


def test_conv_gelu_conv2d_gradients_and_memory():
    conv1, conv2 = nn.Conv2d(6, 12, 1), nn.Conv2d(12, 5, 3, padding=1)
    x = torch.randn(2, 6, 9, 7, requires_grad=True)
    weight = torch.randn(2, 5, 9, 7)
    params = [x, *conv1.parameters(), *conv2.parameters()]
    plain_bytes, expected = saved_bytes(lambda: conv2(F.gelu(conv1(x))))
    ours_bytes, out = saved_bytes(lambda: conv_gelu_conv2d(x, conv1, conv2))
    torch.testing.assert_close(out, expected)
    assert type(out.grad_fn).__name__ == '_ConvGELUConvFunctionBackward'
    # only x and the parameters, not conv1(x) and its GELU
    weights = sum(p.numel() * 4
                  for p in (conv1.weight, conv1.bias, conv2.weight))
    assert ours_bytes == x.numel() * 4 + weights < plain_bytes
    ours = grads(lambda: conv_gelu_conv2d(x, conv1, conv2), params, weight)
    plain = grads(lambda: conv2(F.gelu(conv1(x))), params, weight)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_conv_gelu_conv2d_under_bf16_autocast():
    conv1, conv2 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = conv_gelu_conv2d(x, conv1, conv2)
        expected = conv2(F.gelu(conv1(x)))
    assert out.dtype == expected.dtype == torch.bfloat16
    ours = torch.autograd.grad(out.float().sum(), [x, conv1.weight])
    plain = torch.autograd.grad(expected.float().sum(), [x, conv1.weight])
    for a, b in zip(ours, plain):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('reverted_sync_bn', [False, True])
def test_batch_norm_add_gradients_statistics_and_memory(
        momentum, reverted_sync_bn):
    norm = trained_bn(4, momentum)
    if reverted_sync_bn:  # what mmengine's runner makes of SyncBN
        norm = revert_sync_batchnorm(nn.SyncBatchNorm.convert_sync_batchnorm(
            nn.Sequential(norm)))[0]
        assert type(norm).__name__ == '_BatchNormXd'
    reference = copy.deepcopy(norm)
    z = torch.randn(3, 4, 5, 6, requires_grad=True)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    weight = torch.randn(3, 4, 5, 6)
    expected = reference(z) + x
    ours_bytes, out = saved_bytes(lambda: batch_norm_add(z, norm, x))
    torch.testing.assert_close(out, expected)
    assert type(out.grad_fn).__name__ == '_BatchNormAddFunctionBackward'
    # the output and x, which the next layers keep anyway, instead of z
    # (and per-channel vectors)
    assert ours_bytes < 2 * z.numel() * 4 + 256
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        torch.testing.assert_close(
            getattr(norm, name), getattr(reference, name))
    params = [z, x, norm.weight, norm.bias]
    ours = grads(lambda: batch_norm_add(z, norm, x), params, weight)
    plain = grads(lambda: reference(z) + x,
                  [z, x, reference.weight, reference.bias], weight)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('case', ['tiny_weight', 'eval', 'float64', 'other'])
def test_batch_norm_add_falls_back(case):
    norm = trained_bn(4)
    z, x = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    warns = None
    if case == 'tiny_weight':
        norm.weight.data[1] = 1e-5
    elif case == 'eval':  # e.g. frozen by norm_eval
        norm.eval()
    elif case == 'float64':
        norm, z, x = norm.double(), z.double(), x.double()
        warns = 'the activations are torch.float64'
    else:  # a BatchNorm with a forward of its own, e.g. SyncBatchNorm
        norm = type('OtherBN', (nn.BatchNorm2d, ),
                    dict(forward=lambda self, t: F.batch_norm(
                        t, None, None, self.weight, self.bias, True)))(4)
        warns = 'OtherBN is not a one-process BatchNorm'
    z.requires_grad_()
    expected = copy.deepcopy(norm)(z) + x
    if warns:
        with pytest.warns(UserWarning, match=warns):
            out = batch_norm_add(z, norm, x)
    else:
        out = batch_norm_add(z, norm, x)
    assert type(out.grad_fn).__name__ != '_BatchNormAddFunctionBackward'
    torch.testing.assert_close(out, expected)


def plain_and_memory_efficient(**kwargs):
    """Two blocks with the same weights (trained-looking norms)."""
    ours = WaveMixBlock(memory_efficient=True, **kwargs)
    for norm in ours.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.weight.data.uniform_(0.5, 2)
    plain = WaveMixBlock(**kwargs)
    plain.load_state_dict(ours.state_dict())
    assert all(type(m) is MemoryEfficientLevelMLP for m in ours.mlps)
    return plain, ours


def prepared_block_and_input(size):
    """A memory-efficient block (32 channels, 2 levels) prepared as for CUDA
    (GEMM 1x1 convolutions, channels_last), an input of size x size pixels
    and a weight of its output."""
    torch.manual_seed(0)
    _, block = plain_and_memory_efficient(embed_dims=32, level=2)
    pointwise_convs_as_gemm(block)
    block.to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, size, size).contiguous(
        memory_format=torch.channels_last)
    return block, x, torch.randn(2, 32, size, size)


def test_block_keeps_less_for_backward_and_computes_the_same():
    plain, block = plain_and_memory_efficient(embed_dims=32, level=3)
    x = torch.randn(2, 32, 32, 32)
    ours_x, plain_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours_bytes, out = saved_bytes(lambda: block(ours_x))
    plain_bytes, expected = saved_bytes(lambda: plain(plain_x))
    torch.testing.assert_close(out, expected)
    # the block's output is kept by the next layer anyway
    assert ours_bytes - out.numel() * 4 < 0.6 * plain_bytes
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (expected * weight).sum().backward()
    torch.testing.assert_close(ours_x.grad, plain_x.grad, rtol=1e-4,
                               atol=1e-4)
    for (name, ours), ref in zip(block.named_parameters(),
                                 plain.parameters()):
        if name.endswith('upsample.bias'):
            # a BatchNorm in training follows: the true gradient is 0, both
            # are float noise around it
            assert ours.grad.abs().max() < 1e-2 > ref.grad.abs().max()
        else:
            torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-3,
                                       atol=1e-4)


def test_under_bf16_autocast_the_recomputations_apply():
    """AMP: each level keeps only its input (recovering the BatchNorm input
    would need float32)."""
    plain, block = plain_and_memory_efficient(embed_dims=32, level=2)
    x = torch.randn(1, 32, 64, 64, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        plain_bytes, expected = saved_bytes(lambda: plain(x))
        ours_bytes, out = saved_bytes(lambda: block(x))
    assert out.dtype == expected.dtype == torch.bfloat16
    assert type(out.grad_fn).__name__ == '_LevelMLPFunctionBackward'
    # bf16 rounding (the left-out bias rounds differently)
    assert (out.float() - expected.float()).abs().max() <= \
        2e-2 * expected.float().abs().max()
    assert ours_bytes < 0.5 * plain_bytes
    grad, = torch.autograd.grad(out.float().sum(), x)
    expected_grad, = torch.autograd.grad(expected.float().sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=5e-2, atol=5e-2)


def test_under_autocast_the_block_keeps_its_input_not_its_levels():
    """Under AMP a memory-efficient block keeps its input (for its first
    convolution), the coarser levels' outputs and the parameters: not the
    wavelet levels, which backward recomputes from the input once."""
    _, block = plain_and_memory_efficient(embed_dims=32, level=3)
    x = torch.randn(2, 32, 64, 64, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        kept, out = saved_bytes(lambda: block(x))
    coarser_outputs = 2 * 16 * (32 * 32 + 16 * 16) * 2  # bf16, levels 2, 3
    params = sum(p.numel() * (4 + 2) for p in block.parameters())
    assert kept <= x.numel() * 2 + coarser_outputs + params
    calls = []
    wavelet_levels = block.wavelet_levels
    block.wavelet_levels = lambda t: calls.append(t.dtype) or \
        wavelet_levels(t)
    out.float().sum().backward()
    assert calls == [torch.bfloat16]  # once for the three levels


def test_block_input_is_freed_by_backward_not_with_the_graph():
    """The block's input, kept for backward by its reduction and level MLPs,
    is freed when backward has used it, while the autograd graph is still
    alive (a CUDA graph's recording keeps its graph for good: an input held
    by the graph would hold its memory in the graphs' pool)."""
    _, block = plain_and_memory_efficient(embed_dims=32, level=3)
    x = torch.randn(2, 32, 64, 64, dtype=torch.bfloat16)
    gone = weakref.ref(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = block(x)
    del x
    assert gone() is not None  # saved for backward
    torch.autograd.grad(out.float().sum(), list(block.parameters()))
    assert out.grad_fn is not None and gone() is None


def test_keep_wavelet_levels_keeps_them_and_recomputes_none():
    """keep_wavelet_levels: under AMP the block keeps its levels as well
    (their bytes more), backward recomputes none of them, and the gradients
    are those of the block that recomputes them."""
    _, block = plain_and_memory_efficient(embed_dims=32, level=3)
    keeping = keep_wavelet_levels(copy.deepcopy(block))
    assert keeping.keep_levels and not hasattr(block, 'keep_levels')
    x = torch.randn(2, 32, 64, 64)
    grads, kept = [], []
    for b in (block, keeping):
        calls = []
        wavelet_levels = b.wavelet_levels
        b.wavelet_levels = lambda t, f=wavelet_levels: calls.append(1) or f(t)
        inputs = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            size, out = saved_bytes(lambda: b(inputs))
        out.float().square().sum().backward()
        kept.append(size)
        grads.append([inputs.grad, *(p.grad for p in b.parameters())])
        assert calls == ([] if b is keeping else [1])
    # bf16 levels of 4 * 8 channels: 32x32, 16x16 and 8x8
    levels = 2 * 32 * (32 * 32 + 16 * 16 + 8 * 8) * 2
    assert kept[1] == kept[0] + levels
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a)
    keep_wavelet_levels(keeping, False)
    assert not keeping.keep_levels


def graph_names(fn):
    """The names of the autograd nodes reachable from ``fn``."""
    names, stack, seen = set(), [fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


@pytest.mark.parametrize('channels_last', [False, True])
def test_under_autocast_level_gradients_add_up_in_place(channels_last):
    """Under AMP the block's levels come from one function whose backward
    adds each level's LL gradient into the finer level's in place (no zero
    tensor, no slice of the MLP's input gradient); the gradients are as
    close to the float64 block's as the plain block's in bf16."""
    torch.manual_seed(0)
    plain, block = plain_and_memory_efficient(embed_dims=32, level=3)
    exact = copy.deepcopy(plain).double()
    memory_format = torch.channels_last if channels_last else \
        torch.contiguous_format
    for model in (plain, block):
        model.to(memory_format=memory_format)
    x = torch.randn(2, 32, 32, 32, dtype=torch.float64)
    weight = torch.randn(2, 32, 32, 32, dtype=torch.float64)

    def run(model, dtype, autocast):
        xg = x.to(dtype).contiguous(
            memory_format=memory_format).requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = model(xg)
        names = graph_names(out.grad_fn)
        grads = torch.autograd.grad((out.double() * weight).sum(),
                                    [xg, *model.parameters()])
        return names, grads

    names, ours = run(block, torch.float32, True)
    _, layers = run(plain, torch.float32, True)
    _, truth = run(exact, torch.float64, False)
    assert '_WaveletLevelsFunctionBackward' in names
    assert 'SliceBackward0' not in names
    param_names = ['x', *dict(block.named_parameters())]
    for name, a, b, c in zip(param_names, ours, layers, truth):
        if name.endswith('upsample.bias'):  # BN follows: true gradient 0
            continue
        error, layers_error = ((t.double() - c).abs().max() for t in (a, b))
        # plus two units in bf16's last place: which way lands a unit or two
        # further from float64 depends on the CPU's kernels (without AVX-512
        # oneDNN has no bf16 convolutions)
        assert error <= 1.5 * layers_error + 2 * BF16_EPS * c.abs().max(), \
            name


@pytest.mark.parametrize('used', [(0, 1, 2), (0, 2), (0, ), (1, )])
def test_wavelet_levels_function_equals_autograd(used):
    """Its gradient equals autograd's through the transforms and slices,
    also where some levels have no gradient of their own."""
    ll = torch.randn(2, 3, 16, 24, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(2, 12, 16 >> k, 24 >> k, dtype=torch.float64)
               for k in range(1, 4)]
    expected_levels, level = [], ll
    for _ in range(3):
        expected_levels.append(haar_dwt_packed(level))
        level = expected_levels[-1][:, :3]
    levels = _WaveletLevelsFunction.apply(ll, 3)
    for ours, expected in zip(levels, expected_levels):
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    grads = [
        torch.autograd.grad(
            sum((out[k] * weights[k]).sum() for k in used), ll)[0]
        for out in (levels, expected_levels)
    ]
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
@pytest.mark.parametrize('with_residual', [False, True])
def test_level_mlp_keeping_its_input(dtype, with_residual):
    """The level MLP recomputed in backward keeps only its input (and the
    parameters), and its output, gradients and running statistics are as
    close to the layers' in float64 as the layers' own in ``dtype`` are. (It
    leaves out the transposed convolution's bias, which the BatchNorm
    subtracts again: that gradient is exactly 0, autograd's is noise.)"""
    torch.manual_seed(0)
    truth = WaveletLevelMLP(6, 12, 8, 4).double()
    truth.norm.load_state_dict(trained_bn(4).double().state_dict())
    truth.upsample.bias.data.uniform_(-2, 2)
    autocast = dtype == torch.bfloat16
    plain = copy.deepcopy(truth).to(torch.float32 if autocast else dtype)
    mlp = copy.deepcopy(plain)
    x = torch.randn(2, 6, 20, 28, dtype=torch.float64)
    residual = torch.randn(2, 4, 40, 56, dtype=torch.float64) \
        if with_residual else None
    weight = torch.randn(2, 4, 40, 56, dtype=torch.float64)

    def run(model, fn, dtype):
        inputs = [t.to(dtype).requires_grad_()
                  for t in (x, residual) if t is not None]
        with torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=autocast and dtype != torch.float64):
            kept, out = saved_bytes(lambda: fn(*inputs))
        grads = torch.autograd.grad((out.double() * weight).sum(),
                                    [*inputs, *model.parameters()])
        stats = [model.norm.running_mean, model.norm.running_var]
        return kept, out, [out, *grads, *stats]

    ours_bytes, out, ours = run(
        mlp, lambda *t: level_mlp_keeping_its_input(mlp, *t), dtype)
    _, expected, layers = run(plain, plain, dtype)
    _, _, exact = run(truth, truth, torch.float64)
    assert type(out.grad_fn).__name__ == '_LevelMLPFunctionBackward'
    assert out.dtype == expected.dtype
    params = sum(p.numel() * 4 for p in mlp.parameters())
    assert ours_bytes <= x.numel() * out.element_size() + 2 * params
    assert mlp.norm.num_batches_tracked == truth.norm.num_batches_tracked
    names = ['out', *('input' for t in (x, residual) if t is not None),
             *dict(mlp.named_parameters()), 'running_mean', 'running_var']
    for name, a, b, c in zip(names, ours, layers, exact):
        scale = c.abs().max()
        if name == 'upsample.bias':
            assert not a.any()
            continue
        error, layers_error = ((t.double() - c).abs().max() for t in (a, b))
        assert error <= 1.5 * layers_error + 1e-9 * scale, name


@pytest.mark.parametrize('autocast', [False, True])
def test_level_mlps_run_their_1x1_convs_as_gemms(autocast, monkeypatch):
    """After prepare_for_training's GEMM step (done here on CPU) the level
    MLPs' recomputed 1x1 convolutions are GEMMs too, with the plain layers'
    outputs and gradients."""
    torch.manual_seed(0)
    plain, block = plain_and_memory_efficient(embed_dims=32, level=2)
    pointwise_convs_as_gemm(block)
    channels_last = torch.channels_last
    plain.to(memory_format=channels_last)
    block.to(memory_format=channels_last)
    linear_calls = []
    linear = F.linear
    monkeypatch.setattr(F, 'linear', lambda *args: linear_calls.append(1) or
                        linear(*args))
    x = torch.randn(2, 32, 32, 32).contiguous(memory_format=channels_last)
    weight = torch.randn(2, 32, 32, 32)
    results = []
    for model in (plain, block):
        xg = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = model(xg)
        (out.float() * weight).sum().backward()
        results.append((out.float(), xg.grad,
                        *(p.grad for p in model.parameters())))
    # the reduction conv once, fc1 and fc2 of each level, again in each
    # level's backward fc1 (float32) or both (autocast: all is recomputed,
    # the levels too: the reduction once more, and the finer level's input
    # gradient as two GEMMs, for its own and the coarser output's channels)
    assert len(linear_calls) == 1 + 2 * (2 + (2 if autocast else 1)) + \
        3 * autocast
    names = ['out', 'x', *(n for n, _ in block.named_parameters())]
    for name, ours, expected in zip(names, results[1], results[0]):
        if not name.endswith('upsample.bias'):  # BN follows: true grad 0
            scale = expected.abs().max()
            error = (ours - expected).abs().max()
            assert error <= (3e-2 if autocast else 1e-5) * scale, name


@pytest.mark.parametrize('autocast', [False, True])
def test_gelu_backward_kernel_gives_the_same_gradients(autocast,
                                                       monkeypatch):
    """On CUDA in channels_last (here in Triton's interpreter) each level
    MLP's GELU backward and fc1's bias gradient come from one Triton pass
    (float32: conv_gelu_conv2d; autocast: the level recomputed). In float32
    the gradients are PyTorch's kernels'; under bf16 autocast about as
    close to float64 as theirs."""
    pytest.importorskip(
        'triton', reason='Triton is not installed (requirements/tests.txt)')
    from mmseg_wavemix.ops import gelu_triton

    from ..test_ops.triton_interpreter import interpreted
    block, x, weight = prepared_block_and_input(32)

    def gradients(use_kernel, dtype=torch.float32):
        monkeypatch.setattr(
            module, 'applies', lambda g, h: calls.append(use_kernel) or
            use_kernel and module._rows(g) is not None)
        model = copy.deepcopy(block).to(dtype)
        xg = x.to(dtype).clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=autocast and dtype == torch.float32):
            out = model(xg)
        (out.double() * weight).sum().backward()
        return [xg.grad, *(p.grad for _, p in model.named_parameters())]

    with interpreted(gelu_triton) as module:
        calls = []
        layers, ours = gradients(False), gradients(True)
        assert calls == [False] * 2 + [True] * 2  # each level's backward
        exact = gradients(False, torch.float64)
    names = ['x', *(n for n, _ in block.named_parameters())]
    for name, a, b, c in zip(names, ours, layers, exact):
        if name.endswith('upsample.bias'):  # BN follows: true grad 0
            continue
        scale = c.abs().max()
        if autocast:
            error, layers_error = ((t.double() - c).abs().max()
                                   for t in (a, b))
            # bf16 noise: either may round closer (1-2% of the scale here)
            assert error <= 2 * layers_error + 1e-9 * scale, name
        else:
            assert (a - b).abs().max() <= 1e-5 * scale, name


@pytest.mark.parametrize('grad_layout', ['channels_last', 'nchw'])
def test_reduction_adds_the_residual_gradient_in_its_gemm(
        monkeypatch, grad_layout):
    """Under autocast, with GEMM reductions in channels_last and a block
    input already in the autocast dtype (the residual is the reduction's
    own input), the residual's gradient is added in the reduction's
    input-gradient GEMM: the gradients autograd's separate addition gives,
    up to bf16 rounding (one rounding less), for two blocks in a row. An
    output gradient in NCHW is added after the GEMM instead."""
    from mmseg_wavemix.models.accel import memory_efficient
    torch.manual_seed(0)
    blocks = nn.Sequential(*(plain_and_memory_efficient(embed_dims=32,
                                                        level=2)[1]
                             for _ in range(2)))
    pointwise_convs_as_gemm(blocks)
    blocks.to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, 16, 16).bfloat16().contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(2, 32, 16, 16)  # the output's gradient
    if grad_layout == 'channels_last':
        weight = weight.contiguous(memory_format=torch.channels_last)
    wavelet_levels = memory_efficient._wavelet_levels
    addmm_calls = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, 'addmm', lambda *a, **k: addmm_calls.append(1)
                        or addmm(*a, **k))
    results = []
    for fold in (True, False):
        if not fold:  # no BlockLevels for the reduction: autograd adds
            monkeypatch.setattr(
                memory_efficient, '_wavelet_levels',
                lambda block, x, source=None: wavelet_levels(block, x))
        model, xg = copy.deepcopy(blocks), x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(xg)
        (out.float() * weight).sum().backward()
        results.append([xg.grad, *(p.grad for p in model.parameters())])
        if fold:  # one per block; the last block's NCHW gradient: none
            assert len(addmm_calls) == (2 if grad_layout != 'nchw' else 1)
            calls = len(addmm_calls)
    assert len(addmm_calls) == calls  # none without
    names = ['x', *(n for n, _ in blocks.named_parameters())]
    for name, folded, added in zip(names, *results):
        if not name.endswith('upsample.bias'):  # BN follows: true grad 0
            scale = added.abs().max()
            assert (folded - added).abs().max() <= 2e-2 * scale, name


def test_backward_casts_no_weight_again_and_gives_float32_gradients():
    """Under autocast the level MLPs and the GEMM reduction keep their
    weights as the forward cast them: backward casts none again (a kernel
    each per step) and returns the parameters' gradients in float32, the
    bias gradients summed in float32 not rounded to bf16 on the way."""
    _, block = plain_and_memory_efficient(embed_dims=32, level=2)
    pointwise_convs_as_gemm(block)
    block.to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, 16, 16).bfloat16().contiguous(
        memory_format=torch.channels_last).requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = block(x)
    grads = out.grad_fn.apply(torch.ones_like(out))  # the finest level's
    assert [g.dtype for g in grads[6:14]] == [torch.float32] * 8
    # the levels' recomputation runs the reduction layer itself (as a
    # matrix): autocast casts its weight and bias there
    shapes = {tuple(p.shape) for p in block.mlps.parameters()}
    shapes.add(tuple(block.reduction.weight.shape))
    casts = []

    class Casts(TorchDispatchMode):

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket is torch.ops.aten._to_copy:
                casts.append((tuple(out.shape), out.dtype))
            return out

    with Casts():
        out.float().sum().backward()
    weight_casts = [c for c in casts if c[0] in shapes]
    assert weight_casts and all(dtype == torch.float32
                                for _, dtype in weight_casts)


@pytest.mark.parametrize('faster,layouts', [('layers', 'channels_last'),
                                            ('triton', 'channels_last'),
                                            ('triton', 'other')])
def test_level_mlps_without_the_concatenation(kernel_calls, monkeypatch,
                                              faster, layouts):
    """On a GPU in float16 or bfloat16 (here float16 in Triton's
    interpreter) a level MLP given a coarser level's output computes fc1
    and its GELU of the two in one Triton kernel where that was found
    faster, in forward and in backward's recomputation (storing the GELU's
    input too): no concatenation is made and fc1's weight gradient comes
    from the parts (where a gradient is in another layout, from their
    concatenation). Outputs, gradients and running statistics are as close
    to float64 as the layers' way."""
    from mmseg_wavemix.models.accel import (memory_efficient, pointwise_gemm,
                                            timing)

    from .test_pointwise_gemm import kernels_faster
    torch.manual_seed(0)
    _, block = plain_and_memory_efficient(embed_dims=32, level=2)
    pointwise_convs_as_gemm(block)
    block.to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, 16, 16, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(2, 32, 16, 16, dtype=torch.float64)

    class Concatenations(TorchDispatchMode):

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket is torch.ops.aten.cat and out.dim() == 4:
                cats.append(tuple(out.shape))
            return out

    def step(model, dtype):
        xg = x.to(dtype).detach().requires_grad_()
        with Concatenations():
            out = model(xg)
            (out.double() * weight).sum().backward()
        return out, xg.grad

    def run(way, dtype):
        monkeypatch.setattr(pointwise_gemm, '_FASTEST_LINEAR_GELU', {})
        monkeypatch.setattr(timing, 'time_ms',
                            kernels_faster(kernel_calls, way == 'triton'))
        step(copy.deepcopy(block).to(dtype), dtype)  # the ways timed
        cats.clear()
        kernel_calls.clear()
        model = copy.deepcopy(block).to(dtype)
        out, grad = step(model, dtype)
        stats = [t for name, t in model.named_buffers() if 'running' in name]
        return [out, grad, *(p.grad for p in model.parameters()), *stats]

    cats = []
    exact = run('layers', torch.float64)
    layers = run('layers', torch.float16)
    assert cats == [(2, 48, 8, 8)] * 2  # the finer level's input, again
    if layouts == 'other':  # as for a gradient not in channels_last
        monkeypatch.setattr(memory_efficient, 'pointwise_weight_grad',
                            lambda *args: None)
    ours = run(faster, torch.float16)
    # the GELU's and fc1's of each level, forward and recomputed
    assert kernel_calls.count('linear_gelu') == (2 * 2 if faster == 'triton'
                                                 else 0)
    made = {'layers': 2, 'triton': 0 if layouts == 'channels_last' else 1}
    assert cats == [(2, 48, 8, 8)] * made[faster]
    names = ['out', 'x', *(n for n, _ in block.named_parameters()),
             *(n for n, _ in block.named_buffers() if 'running' in n)]
    assert len(names) == len(ours)
    for name, a, b, c in zip(names, ours, layers, exact):
        if name.endswith('upsample.bias'):  # BN follows: true grad 0
            continue
        error, layers_error = ((t.double() - c).abs().max() for t in (a, b))
        assert error <= 2 * layers_error + 1e-4 * c.abs().max(), name


def test_level_input_gradients_are_dense_in_channels_last():
    """Under autocast, channels_last, the level MLP's input gradient comes
    as two dense tensors, the level's and the coarser output's, not as
    slices of one; in NCHW (dense slices) as before."""
    grad_out = torch.randn(2, 12, 5, 7)
    weight = torch.randn(12, 10, 1, 1)
    assert _pointwise_input_grads(grad_out, weight, 6) is None
    grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    grad_level, grad_coarser = _pointwise_input_grads(grad_out, weight, 6)
    expected = F.conv_transpose2d(grad_out, weight)
    for grad, channels in ((grad_level, slice(0, 6)),
                           (grad_coarser, slice(6, 10))):
        assert grad.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(grad, expected[:, channels])


def test_plain_mlp_in_eval_and_frozen_norms():
    plain, block = plain_and_memory_efficient(embed_dims=16, level=1)
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    block.eval()
    assert saved_bytes(lambda: block(x))[0] == saved_bytes(
        lambda: plain.eval()(x))[0]
    # norm_eval: the MLP trains, its BatchNorm keeps its statistics
    backbone = WaveMix(embed_dims=16, depth=1, level=1, norm_eval=True,
                       memory_efficient=True).train()
    stats = backbone.layers[0].mlps[0].norm.running_mean.clone()
    backbone(torch.randn(1, 3, 32, 32))[0].sum().backward()
    torch.testing.assert_close(backbone.layers[0].mlps[0].norm.running_mean,
                               stats)


def test_strided_stem_recomputes_its_features_under_autocast():
    """Under autocast the strided stem keeps the image, not its D/2-channel
    features at half resolution; parameters and image get the plain
    gradients (float64, which autocast leaves as it is)."""
    torch.manual_seed(0)
    plain = WaveMix(embed_dims=16, depth=1, level=1).double()
    ours = WaveMix(embed_dims=16, depth=1, level=1,
                   memory_efficient=True).double()
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    weight = torch.randn(2, 16, 8, 12, dtype=torch.float64)
    results = []
    for model in (plain, ours):
        image = x.clone().requires_grad_()
        shapes = []
        with torch.autocast('cpu', dtype=torch.bfloat16), \
                torch.autograd.graph.saved_tensors_hooks(
                    lambda t: shapes.append(tuple(t.shape)) or t,
                    lambda t: t):
            out, = model(image)
        results.append((shapes, grads(lambda: out,
                                      [image, *model.parameters()], weight)))
    (plain_kept, expected), (ours_kept, got) = results
    stem_features = (2, 8, 16, 24)  # (N, D/2, H/2, W/2)
    assert stem_features in plain_kept and stem_features not in ours_kept
    names = ['image', *dict(plain.named_parameters())]
    for name, a, b in zip(names, got, expected):
        if name.endswith('upsample.bias'):  # BN follows: true grad 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, msg=name,
                                   atol=1e-5 * b.abs().max().item())


def test_same_state_dict_as_the_plain_model():
    plain = WaveMix(embed_dims=16, depth=2, level=2)
    ours = WaveMix(embed_dims=16, depth=2, level=2, memory_efficient=True)
    assert plain.state_dict().keys() == ours.state_dict().keys()
    ours.load_state_dict(plain.state_dict())


@pytest.mark.parametrize('kwargs,match', [
    (dict(act_cfg=dict(type='ReLU')), 'exact GELU'),
    (dict(dropout=0.1), 'no dropout'),
    (dict(norm_cfg=dict(type='GN', num_groups=2)), 'BatchNorm'),
    (dict(with_cp=True), 'with_cp and memory_efficient'),
])
def test_clear_error_where_it_cannot_apply(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WaveMixBlock(16, level=1, memory_efficient=True, **kwargs)
