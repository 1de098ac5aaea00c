# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The fused level MLP (prepare_for_inference on CUDA, by default): its
kernels run on CPU here in Triton's interpreter; on a GPU in
tests/test_cuda.py."""
import copy

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel import (FusedLevelMLP, FusedUpsample,
                                        can_fuse_level_mlp,
                                        few_channel_convs_as_gemm,
                                        fold_head_classifier, fuse_level_mlps,
                                        fuse_norm_layers, fuse_upsamples,
                                        fused_upsample,
                                        pointwise_convs_as_gemm,
                                        pointwise_gemm, prepare_for_inference,
                                        timing)
from mmseg_wavemix.models.backbones import WaveMixBlock
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..conftest import REPO_ROOT
from .test_pointwise_gemm import kernels_faster

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')


def trained_block(level=3, memory_efficient=False):
    torch.manual_seed(0)
    block = WaveMixBlock(32, level=level, memory_efficient=memory_efficient)
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-1, 1)
    return block.eval()


@pytest.fixture
def fc1_kernel(monkeypatch):
    """fc1 + GELU by the Triton kernel, untimed (the timed choice:
    test_fc1_and_gelu_by_the_faster_way_that_agrees)."""
    monkeypatch.setattr(pointwise_gemm, 'fastest',
                        lambda calls, *args, **kwargs: 'triton')


# the kernel each upsampling calls last
UPSAMPLE_CALLS = dict(
    triton='conv_transpose_k4s2',
    triton_tma='conv_transpose_k4s2_tma',
    cudnn='add_bias_residual_')


@pytest.mark.parametrize('channels_last,memory_efficient,upsample_kernel', [
    (True, False, 'triton'), (False, True, 'triton'), (True, False, 'cudnn'),
    (True, False, 'triton_tma')
])
def test_fused_block_is_as_close_to_float64_as_the_layers_in_fp16(
        kernel_calls, fc1_kernel, channels_last, memory_efficient,
        upsample_kernel):
    """Every level fused (also the recipe's memory-efficient MLPs, which
    infer with the plain layers); the fused block's fp16 output is as close
    to the float64 block's as the plain layers' fp16 output is (it rounds
    less: the hidden tensor never goes through fp16 before the GELU). Not
    channels_last, fc1 + GELU are the layers'."""
    block = fuse_norm_layers(trained_block(memory_efficient=memory_efficient))
    exact = copy.deepcopy(block).double()
    plain = copy.deepcopy(block).half()
    fused = fuse_level_mlps(copy.deepcopy(block), upsample_kernel).half()
    assert all(isinstance(m, FusedLevelMLP) for m in fused.mlps)
    memory_format = torch.channels_last if channels_last else \
        torch.contiguous_format
    x = torch.randn(2, 32, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        expected = exact(x)
        layers = plain(x.half().contiguous(memory_format=memory_format))
        out = fused(x.half().contiguous(memory_format=memory_format))
    per_level = ['linear_gelu'] * channels_last + [
        UPSAMPLE_CALLS[upsample_kernel]
    ]
    assert kernel_calls == per_level * 3
    assert out.dtype == torch.float16
    assert out.is_contiguous(memory_format=memory_format)
    layers_error = (layers.double() - expected).abs().max()
    error = (out.double() - expected).abs().max()
    assert error <= 1.5 * layers_error, (error, layers_error)


@pytest.mark.parametrize('faster', ['triton', 'triton_tma', 'cudnn'])
def test_auto_times_the_upsampling_kernels_once_per_size(
        kernel_calls, fc1_kernel, monkeypatch, faster):
    """``'auto'`` (the default): at the first call of a size each kernel
    runs and is timed; the fastest then serves that size."""
    monkeypatch.setattr(fused_upsample, '_FASTEST_UPSAMPLE', {})
    costs = {name: 1. if kernel == faster else 2.
             for kernel, name in UPSAMPLE_CALLS.items()}

    def timed(fn, device):
        fn()
        return costs[kernel_calls[-1]]

    monkeypatch.setattr(timing, 'time_ms', timed)
    block = fuse_norm_layers(trained_block(level=2))
    fused = fuse_level_mlps(copy.deepcopy(block)).half()
    chosen = fuse_level_mlps(copy.deepcopy(block), faster).half()
    # channels_last: the TMA kernel applies too
    x = torch.randn(1, 32, 8, 8).half().contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        first = fused(x)
        assert set(kernel_calls) == {'linear_gelu', *UPSAMPLE_CALLS.values()}
        kernel_calls.clear()
        again = fused(x)
        assert kernel_calls == ['linear_gelu', UPSAMPLE_CALLS[faster]] * 2
        expected = chosen(x)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert set(fused_upsample._FASTEST_UPSAMPLE.values()) == {faster}
    assert len(fused_upsample._FASTEST_UPSAMPLE) == 2  # two level sizes


def test_auto_leaves_out_a_kernel_that_fails(kernel_calls, fc1_kernel,
                                             monkeypatch):
    """A candidate that raises (a Triton that cannot build it, say) is
    left out with a warning; the others serve."""
    from mmseg_wavemix.ops import level_mlp_triton
    monkeypatch.setattr(fused_upsample, '_FASTEST_UPSAMPLE', {})

    def broken(*args, **kwargs):
        raise RuntimeError('no TMA here')

    monkeypatch.setattr(level_mlp_triton, 'conv_transpose_k4s2_tma', broken)
    block = fuse_norm_layers(trained_block(level=1))
    fused = fuse_level_mlps(copy.deepcopy(block)).half()
    x = torch.randn(1, 32, 8, 8).half().contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad(), pytest.warns(UserWarning,
                                       match="'triton_tma'.*no TMA here"):
        out = fused(x)
    assert set(fused_upsample._FASTEST_UPSAMPLE.values()) <= {
        'triton', 'cudnn'
    }
    with torch.no_grad():
        expected = fuse_level_mlps(copy.deepcopy(block), 'triton').half()(x)
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)


def test_gpus_without_tensor_core_products_run_cublas_and_cudnn(
        kernel_calls, monkeypatch):
    """Where Triton's products would not run on tensor cores (a V100 or T4
    here, by the capability), neither fc1 + GELU nor the upsampling is
    tuned or timed in Triton: the layers' GEMM and cuDNN's transposed
    convolution serve, its bias and residual added in the one pass."""
    from mmseg_wavemix.ops import level_mlp_triton
    monkeypatch.setattr(fused_upsample, '_FASTEST_UPSAMPLE', {})
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_LINEAR_GELU', {})
    monkeypatch.setattr(level_mlp_triton, 'tensor_core_products',
                        lambda device: False)
    block = fuse_norm_layers(trained_block(level=2))
    fused = fuse_level_mlps(copy.deepcopy(block)).half()
    x = torch.randn(1, 32, 8, 8).half().contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        out = fused(x)
        assert kernel_calls == ['add_bias_residual_'] * 2
        expected = fuse_level_mlps(copy.deepcopy(block), 'cudnn').half()(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert set(fused_upsample._FASTEST_UPSAMPLE.values()) == {'cudnn'}
    assert not pointwise_gemm._FASTEST_LINEAR_GELU  # nothing timed


def test_float32_gradients_and_training_run_the_layers(
        kernel_calls, fc1_kernel):
    block = fuse_norm_layers(trained_block(level=2))
    fused = fuse_level_mlps(copy.deepcopy(block), 'triton')
    x = torch.randn(1, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # float32: the layers, exactly
        torch.testing.assert_close(fused(x), block(x), rtol=0, atol=0)
    torch.testing.assert_close(fused(x), block(x), rtol=0, atol=0)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        fused.train()(x)
        assert not kernel_calls
        out = fused.eval()(x)
    assert len(kernel_calls) == 4  # two kernels per level, in fp16
    assert out.dtype == torch.float16


@pytest.mark.parametrize('serves', ['layers', 'triton', 'wrong triton'])
def test_fc1_and_gelu_by_the_faster_way_that_agrees(kernel_calls, monkeypatch,
                                                    serves):
    """fc1 + GELU: the Triton kernel (its weights packed once) or the
    layers, whichever was faster at the first call of the size; a kernel
    whose result differs from the layers' is left out, with a warning."""
    from mmseg_wavemix.ops import level_mlp_triton
    monkeypatch.setattr(pointwise_gemm, '_FASTEST_LINEAR_GELU', {})
    monkeypatch.setattr(timing, 'time_ms',
                        kernels_faster(kernel_calls, serves != 'layers'))
    if serves == 'wrong triton':
        kernel = level_mlp_triton.linear_gelu
        monkeypatch.setattr(level_mlp_triton, 'linear_gelu',
                            lambda *args, **kwargs: kernel(*args, **kwargs) *
                            1.01)
    packed = []
    pack = level_mlp_triton.pack_linear_weight
    monkeypatch.setattr(level_mlp_triton, 'pack_linear_weight',
                        lambda weight: packed.append(weight) or pack(weight))
    block = fuse_norm_layers(trained_block(level=1))
    plain = copy.deepcopy(block).half()
    fused = fuse_level_mlps(copy.deepcopy(block), 'cudnn').half()
    x = torch.randn(1, 32, 8, 8).half().contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        if serves == 'wrong triton':
            with pytest.warns(UserWarning,
                              match="'triton' differs from 'layers' by 0.01"):
                fused(x)
        else:
            fused(x)
        assert len(packed) == 1  # at the first call; never again
        kernel_calls.clear()
        out = fused(x)
        layers = plain(x)
    assert list(pointwise_gemm._FASTEST_LINEAR_GELU.values()) == [
        'triton' if serves == 'triton' else 'layers'
    ]
    assert kernel_calls == ['linear_gelu'] * (serves == 'triton') + [
        'add_bias_residual_'
    ]
    assert len(packed) == 1
    torch.testing.assert_close(out, layers, rtol=2e-3, atol=2e-3)


def test_only_folded_level_mlps_are_fused():
    block = trained_block(level=2)
    assert not any(can_fuse_level_mlp(m) for m in block.modules())
    fuse_level_mlps(block)  # norms not folded: nothing to fuse
    assert not any(isinstance(m, FusedLevelMLP) for m in block.modules())
    fuse_norm_layers(block)
    fuse_level_mlps(block)
    assert all(isinstance(m, FusedLevelMLP) for m in block.mlps)
    fuse_level_mlps(block)  # a second time: nothing more
    assert not any(isinstance(m.mlp, FusedLevelMLP) for m in block.mlps)
    with pytest.raises(TypeError, match='fuse_norm_layers'):
        FusedLevelMLP(trained_block(level=1).mlps[0])
    with pytest.raises(ValueError, match="'triton_tma', 'cudnn'"):
        FusedLevelMLP(block.mlps[0].mlp, upsample_kernel='cublas')


def test_packed_weights_follow_the_module(kernel_calls):
    block = fuse_level_mlps(fuse_norm_layers(trained_block(level=1)))
    mlp = block.mlps[0]
    w1 = mlp._weights(torch.float16)[0]
    assert mlp._weights(torch.float16)[0] is w1  # packed once
    block.half()
    assert mlp._weights(torch.float16)[0] is not w1  # moved: packed again


def test_prepare_for_inference_fuses_on_cuda_only():
    block = trained_block(level=1)
    model = nn.Sequential(block)
    prepare_for_inference(model, fuse_mlp=True)
    prepare_for_inference(model)
    assert not any(
        isinstance(m, (FusedLevelMLP, FusedUpsample))
        for m in model.modules())
    with pytest.raises(ValueError, match='set one of them'):
        prepare_for_inference(model, fuse_mlp=True, compile=True)


def test_whole_model_as_prepare_for_inference_fuses_it_on_cuda(
        kernel_calls, fc1_kernel):
    """The steps prepare_for_inference(fuse_mlp=True) takes on CUDA (folded
    norms, fused level MLPs and upsamplings, convolutions as GEMMs,
    channels_last weights), here on CPU: the demo model's fp16 logits are
    as close to float64 as the unfused model's."""
    torch.manual_seed(0)
    _, model = build_model_from_config(
        f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py', {
            'model.decode_head.channels': 8,
            'model.decode_head.num_classes': 5
        })
    model = fuse_norm_layers(model.eval())
    exact = copy.deepcopy(model).double()
    plain = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fused = copy.deepcopy(model)
    fold_head_classifier(fused.decode_head)
    # the head's upsamplings by cuDNN and one bias pass: their Triton kernels
    # at the image's size take half a minute in the interpreter (the head's
    # kernels and their choice: test_fused_upsample.py)
    fused = few_channel_convs_as_gemm(pointwise_convs_as_gemm(
        fuse_upsamples(fuse_level_mlps(fused), 'cudnn')))
    fused.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 128, dtype=torch.float64)
    inputs = x.float().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = exact(x, mode='tensor')
        with torch.autocast('cpu', dtype=torch.float16):
            layers = plain(inputs, mode='tensor')
            fused(inputs, mode='tensor')  # the upsampling kernels timed
            kernel_calls.clear()
            out = fused(inputs, mode='tensor')
    # two blocks of four levels, and the head's two upsamplings
    assert len(kernel_calls) == 2 * 4 * 2 + 2
    layers_error = (layers.double() - expected).abs().max()
    error = (out.double() - expected).abs().max()
    assert error <= 1.5 * layers_error, (error, layers_error)
