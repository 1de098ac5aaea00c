# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The Triton kernels of the fused level MLP against PyTorch's layers in
float64, run on CPU in Triton's interpreter (bfloat16 only on CUDA: the
interpreter's tl.dot gets bfloat16 wrong, tests/test_cuda.py)."""
import pytest
import torch
import torch.nn.functional as F

from mmseg_wavemix.ops import level_mlp_triton as level_mlp_triton_module

from .test_haar_triton import make_input as make
from .triton_interpreter import interpreted

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')

TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=4e-3),
}


@pytest.fixture(scope='module')
def kernels():
    with interpreted(level_mlp_triton_module) as module:
        yield module


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('channels_last', [False, True])
# (CA, CB, CO), partial blocks of channels in a and b (16 in the
# interpreter), b in a's layout or the other
@pytest.mark.parametrize('channels,b_layout', [
    ((24, 12, 40), 'same'), ((24, 12, 40), 'other'), ((20, 0, 18), 'same'),
    ((32, 36, 24), 'same'), ((32, 36, 24), 'other')
])
def test_linear_gelu_equals_the_layers(kernels, channels, b_layout,
                                       channels_last, dtype):
    ca, cb, co = channels
    a = make((2, ca, 5, 7), dtype, channels_last)
    b = make((2, cb, 5, 7), dtype, channels_last ^ (b_layout == 'other')) \
        if cb else None
    weight = torch.randn(co, ca + cb, 1, 1, dtype=torch.float64) / 4
    bias = torch.randn(co, dtype=torch.float64)
    out = kernels.linear_gelu(a, b, kernels.pack_linear_weight(weight).to(
        dtype), bias.float())
    inputs = a if b is None else torch.cat((a, b), 1)
    expected = F.gelu(F.conv2d(inputs.double(), weight, bias))
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last
                             if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('channels', [(24, 12, 40), (20, 0, 18)])
def test_linear_gelu_gives_the_pre_activation_too(kernels, channels, dtype):
    """In training the GELU's backward needs its input: the same pass stores
    it, in the output's dtype and layout, and the output is unchanged."""
    ca, cb, co = channels
    a = make((2, ca, 5, 7), dtype, True)
    b = make((2, cb, 5, 7), dtype, True) if cb else None
    weight = torch.randn(co, ca + cb, 1, 1, dtype=torch.float64) / 4
    bias = torch.randn(co, dtype=torch.float64)
    args = (a, b, kernels.pack_linear_weight(weight).to(dtype), bias.float())
    pre, out = kernels.linear_gelu(*args, pre_activation=True)
    inputs = a if b is None else torch.cat((a, b), 1)
    expected = F.conv2d(inputs.double(), weight, bias)
    for t in (pre, out):
        assert t.dtype == dtype
        assert t.is_contiguous(memory_format=torch.channels_last)
    assert pre.data_ptr() != out.data_ptr()
    torch.testing.assert_close(pre.double(), expected, **TOLERANCES[dtype])
    torch.testing.assert_close(out, kernels.linear_gelu(*args), rtol=0,
                               atol=0)
    torch.testing.assert_close(out.double(), F.gelu(expected),
                               **TOLERANCES[dtype])


@pytest.mark.parametrize('dtype,channels_last,with_residual', [
    (torch.float16, True, True), (torch.float16, False, False),
    (torch.float32, True, False), (torch.float32, False, True)
])
@pytest.mark.parametrize('shape', [(2, 20, 5, 7), (1, 32, 1, 1)])
def test_conv_transpose_equals_the_layer(kernels, shape, dtype,
                                         channels_last, with_residual):
    """Every output phase and border: odd sizes and a single pixel."""
    check_conv_transpose(kernels.conv_transpose_k4s2, kernels, shape, 18,
                         dtype, channels_last, with_residual)


@pytest.mark.parametrize('dtype,with_residual', [(torch.float16, True),
                                                 (torch.float32, False)])
@pytest.mark.parametrize('shape,out_channels', [((2, 24, 5, 7), 24),
                                                ((1, 32, 1, 1), 16),
                                                ((1, 16, 9, 10), 40)])
def test_conv_transpose_through_the_tma_equals_the_layer(
        kernels, shape, out_channels, dtype, with_residual):
    """The TMA's zero fill is the padding at every border (odd sizes, a
    single pixel, partial tiles of pixels and channels)."""
    check_conv_transpose(kernels.conv_transpose_k4s2_tma, kernels, shape,
                         out_channels, dtype, True, with_residual)


def check_conv_transpose(kernel, kernels, shape, out_channels, dtype,
                         channels_last, with_residual):
    """``kernel``'s output against the layer's in float64."""
    n, c, h, w = shape
    x = make(shape, dtype, channels_last)
    weight = torch.randn(c, out_channels, 4, 4, dtype=torch.float64) / 8
    bias = torch.randn(out_channels, dtype=torch.float64)
    residual = make((n, out_channels, 2 * h, 2 * w), dtype, channels_last) \
        if with_residual else None
    out = kernel(x,
                 kernels.pack_conv_transpose_weight(weight).to(dtype),
                 bias.float(), residual)
    expected = F.conv_transpose2d(x.double(), weight, bias, stride=2,
                                  padding=1)
    if with_residual:
        expected += residual.double()
    assert out.dtype == dtype
    if h * w > 1:  # a single pixel is both layouts; the output contiguous
        assert out.is_contiguous(memory_format=torch.channels_last
                                 if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])


def test_the_tma_needs_channels_last_rows_of_16_bytes(kernels):
    packed = torch.zeros(4, 4, 24, 16, dtype=torch.float16)
    x = torch.zeros(1, 24, 4, 4, dtype=torch.float16)
    assert not kernels.tma_applies(x, packed)  # NCHW
    x = x.contiguous(memory_format=torch.channels_last)
    assert kernels.tma_applies(x, packed)
    assert not kernels.tma_applies(x[:, :20], packed[:, :, :20])  # 40 bytes
    with pytest.raises(ValueError, match='tma_applies'):
        kernels.conv_transpose_k4s2_tma(x.contiguous(), packed,
                                        torch.zeros(16))


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('channels_last,residual_layout', [
    (True, True), (False, False), (True, False), (False, None)])
@pytest.mark.parametrize('scaled', [False, True])
def test_add_bias_residual_equals_the_sum(kernels, dtype, channels_last,
                                          residual_layout, scaled):
    """In place, per channel (the scale too: a BatchNorm's), in both
    layouts, with partial blocks of rows and columns (a block is 16 wide in
    the interpreter: 37 pixels, 19 channels); a residual in the other
    layout is added all the same."""
    shape = (2, 19, 5, 37) if channels_last else (3, 7, 5, 7)
    out = make(shape, dtype, channels_last)
    before = out.double()
    bias = torch.randn(shape[1])
    scale = torch.randn(shape[1]) if scaled else None
    residual = None if residual_layout is None else make(
        shape, dtype, residual_layout)
    result = kernels.add_bias_residual_(out, bias, residual, scale)
    if scaled:
        before = before * scale.double().view(1, -1, 1, 1)
    expected = before + bias.double().view(1, -1, 1, 1)
    if residual is not None:
        expected += residual.double()
    assert result is out
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])


@pytest.mark.parametrize('dtype', list(TOLERANCES))
# partial tiles in every dimension (16 in the interpreter); a WaveMix
# block's shape (K = D / 4); c row-major or column-major
@pytest.mark.parametrize('m,k,co,c_order', [(37, 24, 40, 'rows'),
                                            (48, 64, 256, 'rows'),
                                            (5, 8, 3, 'columns')])
def test_matmul_add_equals_addmm(kernels, m, k, co, c_order, dtype):
    generator = torch.Generator().manual_seed(0)
    a, w = (torch.randn(size, dtype=torch.float64, generator=generator).to(
        dtype) for size in ((m, k), (k, co)))
    c = torch.randn(m, co, dtype=torch.float64,
                    generator=generator).to(dtype)
    if c_order == 'columns':
        c = c.t().contiguous().t()
    out = kernels.matmul_add(a, w, c)
    assert out.dtype == dtype and out.shape == (m, co)
    assert out.is_contiguous()
    # the product and the sum of the rounded inputs, rounded once
    expected = torch.addmm(c.double(), a.double(), w.double())
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])


def test_shapes_that_do_not_fit_are_named(kernels):
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match='4x4|4, 4'):
        kernels.pack_conv_transpose_weight(torch.randn(8, 8, 3, 3))
    packed = kernels.pack_conv_transpose_weight(torch.randn(8, 6, 4, 4))
    with pytest.raises(ValueError, match='16 channels'):
        kernels.conv_transpose_k4s2(torch.randn(1, 16, 4, 4), packed,
                                    torch.zeros(6))
    with pytest.raises(ValueError, match='residual'):
        kernels.conv_transpose_k4s2(x, packed, torch.zeros(6),
                                    torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match='residual'):
        kernels.add_bias_residual_(x, torch.zeros(8), torch.randn(1, 8, 2, 2))
    with pytest.raises(ValueError, match='channels_last'):
        kernels.add_bias_residual_(x[..., ::2], torch.zeros(8))
    with pytest.raises(ValueError, match=r'\(6, 2\) @ \(3, 4\)'):
        kernels.matmul_add(torch.randn(6, 2), torch.randn(3, 4),
                           torch.randn(6, 4))
    with pytest.raises(ValueError, match=r'\+ \(4, 6\)'):
        kernels.matmul_add(torch.randn(6, 2), torch.randn(2, 4),
                           torch.randn(4, 6))
    with pytest.raises(ValueError, match='8 \\+ 4'):
        kernels.linear_gelu(x, torch.randn(1, 4, 4, 4),
                            torch.randn(8, 5), torch.zeros(5))


def test_images_of_many_sizes_share_a_tuning():
    """The tuner's key is the pixel count rounded up to a power of two: a
    dataset of images of many sizes tunes a few times, not once per size."""
    tuning_size = level_mlp_triton_module.tuning_size
    assert [tuning_size(m) for m in (1, 2, 3, 4096, 4097)] == \
        [1, 2, 4, 4096, 8192]
    sizes = {
        tuning_size(h * w)
        for h in range(120, 136) for w in range(120, 136)
    }
    assert len(sizes) <= 2
    for kernel in (level_mlp_triton_module._linear_gelu_kernel,
                   level_mlp_triton_module._conv_transpose_kernel,
                   level_mlp_triton_module._matmul_add_kernel):
        if hasattr(kernel, 'keys'):  # tuned (not in the interpreter)
            assert 'M' not in kernel.keys and 'M_TUNED' in kernel.keys


@pytest.mark.parametrize('out_channels,widths,tma_widths', [
    (19, {32}, {128}),  # the decode head's classes: the narrowest TMA tiles
    (128, {64, 128}, {128}),
    (256, {64, 128, 256}, {128, 256}),
    (512, {64, 128, 256}, {128, 256}),
])
def test_the_tuner_tries_tiles_that_fit_the_output_channels(
        out_channels, widths, tma_widths):
    """Tiles wider than the output channels compute columns thrown away;
    those much narrower waste the tensor cores' width. Each config tuned
    is a compilation."""
    kernels = level_mlp_triton_module
    for configs, expected in ((kernels._configs(), widths),
                              (kernels._tma_configs(), tma_widths)):
        fit = kernels._fitting(configs, dict(CO=out_channels))
        assert {c.kwargs['BN'] for c in fit} == expected
    for kernel in (kernels._linear_gelu_kernel,
                   kernels._conv_transpose_kernel,
                   kernels._conv_transpose_tma_kernel,
                   kernels._matmul_add_kernel):
        if hasattr(kernel, 'early_config_prune'):  # not in the interpreter
            assert kernel.early_config_prune is kernels._fitting
            # a later process reads the timings (Triton 3.6 and later)
            assert getattr(kernel, 'cache_results', True)


def test_without_a_gpu_driver_for_the_tuners_the_kernels_stand_aside(
        monkeypatch):
    """An older Triton (3.2) builds each tuner's timer from the GPU driver
    when the kernels are defined: without one (a CPU machine with a CUDA
    build of torch) the package still imports, and the layers serve."""
    import importlib

    import triton

    def no_driver(*args, **kwargs):
        raise RuntimeError('0 active drivers ([]). There should only be one.')

    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(triton, 'autotune', no_driver)
    try:
        module = importlib.reload(level_mlp_triton_module)
        assert not module._TUNERS_BUILT
        assert not isinstance(module._conv_transpose_kernel,
                              triton.runtime.Autotuner)
        x = torch.zeros(1, 8, 2, 2, dtype=torch.float16, device='meta')
        monkeypatch.setattr(type(x), 'is_cuda', property(lambda t: True))
        assert not module.applies(x)
    finally:
        monkeypatch.undo()
        importlib.reload(level_mlp_triton_module)
    assert level_mlp_triton_module._TUNERS_BUILT


@pytest.mark.parametrize('capability, products', [((7, 0), False),
                                                  ((7, 5), False),
                                                  ((8, 0), True),
                                                  ((8, 9), True),
                                                  ((9, 0), True)])
def test_products_run_on_tensor_cores_from_compute_capability_8(
        monkeypatch, capability, products):
    """Triton 3 compiles the products for tensor cores from sm_80 (the
    A100) on (tests/test_tools/test_triton_codegen.py); on a V100 or T4 the
    kernels with products stand aside. In Triton's interpreter (CPU) they
    run."""
    monkeypatch.setattr(torch.cuda, 'get_device_capability',
                        lambda device=None: capability)
    level_mlp_triton_module._capability.cache_clear()  # kept per device
    try:
        assert level_mlp_triton_module.tensor_core_products(
            torch.device('cuda', 0)) is products
    finally:
        level_mlp_triton_module._capability.cache_clear()
    assert level_mlp_triton_module.tensor_core_products(torch.device('cpu'))
