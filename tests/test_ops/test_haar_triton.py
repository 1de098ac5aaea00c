# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The Triton Haar kernels (the CUDA path) against the plain PyTorch ones,
run on CPU in Triton's interpreter."""
import pytest
import torch

from mmseg_wavemix.ops import haar_dwt, haar_dwt_packed, haar_kernels
from mmseg_wavemix.ops import haar_triton as haar_triton_module

from .triton_interpreter import interpreted

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')

TOLERANCES = {
    torch.float32: dict(rtol=1e-6, atol=1e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
}


@pytest.fixture(scope='module')
def haar_triton():
    with interpreted(haar_triton_module) as module:
        yield module


def make_input(shape, dtype, channels_last, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=generator).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('packed', [False, True])
# the last two span several programs, with partial tiles along the fastest
# dimension (NCHW: half width 150 > 128; channels_last: 136 channels)
@pytest.mark.parametrize(
    'shape', [(2, 3, 8, 10), (1, 1, 2, 2), (1, 2, 6, 300), (1, 136, 4, 6)])
def test_analysis_and_synthesis_equal_the_pytorch_kernels(
        haar_triton, shape, packed, channels_last, dtype):
    x = make_input(shape, dtype, channels_last)
    h, w = shape[-2] // 2, shape[-1] // 2
    # the PyTorch kernels in float64: the reference
    ref_ll, ref_highs = haar_kernels.analysis(x.double())
    ll, highs, out = haar_kernels._empty_bands(x, h, w, packed)
    haar_triton.analysis(x, ll, highs)
    torch.testing.assert_close(ll.double(), ref_ll, **TOLERANCES[dtype])
    torch.testing.assert_close(highs.double(), ref_highs,
                               **TOLERANCES[dtype])
    # synthesis from the (possibly packed, strided) bands, against the
    # float64 synthesis of the same (rounded) bands, which is x up to that
    # rounding
    rec = torch.empty_like(x)
    haar_triton.synthesis(ll, highs, rec)
    ref_rec = haar_kernels.synthesis(ll.double(), highs.double())
    torch.testing.assert_close(rec.double(), ref_rec, **TOLERANCES[dtype])
    # each band |b| <= 2 max|x| is rounded by at most eps |b| / 2, and x
    # is half the sum of four bands
    bound = 2 * torch.finfo(dtype).eps * x.abs().max().item()
    torch.testing.assert_close(ref_rec, x.double(), rtol=0, atol=bound)


def test_channels_last_bands_without_gather(haar_triton, monkeypatch):
    """A Triton without tl.gather (before 3.2) stores the channels_last
    bands at a stride of 3: the same bands."""
    monkeypatch.setattr(haar_triton, '_GATHER', False)
    x = make_input((1, 136, 4, 6), torch.float16, channels_last=True)
    ll, highs, _ = haar_kernels._empty_bands(x, 2, 3, packed=True)
    haar_triton.analysis(x, ll, highs)
    ref_ll, ref_highs = haar_kernels.analysis(x.double())
    tolerance = TOLERANCES[torch.float16]
    torch.testing.assert_close(ll.double(), ref_ll, **tolerance)
    torch.testing.assert_close(highs.double(), ref_highs, **tolerance)
    rec = torch.empty_like(x)
    haar_triton.synthesis(ll, highs, rec)
    torch.testing.assert_close(
        rec.double(), haar_kernels.synthesis(ll.double(), highs.double()),
        **tolerance)


def test_strided_views_in_and_out(haar_triton):
    """The LL channels of a packed level (a non-contiguous view) are the
    input of the next level in a WaveMix block."""
    level = torch.randn(2, 16, 8, 8)
    x = level[:, :4]
    ll, highs = torch.empty(2, 4, 4, 4), torch.empty(2, 4, 3, 4, 4)
    haar_triton.analysis(x, ll, highs)
    ref_ll, ref_highs = haar_kernels.analysis(x.contiguous())
    torch.testing.assert_close(ll, ref_ll)
    torch.testing.assert_close(highs, ref_highs)


@pytest.mark.parametrize('channels_last', [False, True])
def test_the_transform_and_its_gradients_through_triton(
        haar_triton, channels_last, monkeypatch):
    """What a CUDA tensor gets: the autograd Functions on the Triton kernels
    (forward, backward and double backward), odd sizes padded."""
    x = make_input((2, 4, 9, 6), torch.float32, channels_last)
    expected = haar_dwt_packed(x)
    expected_grads = torch.autograd.grad(
        (haar_dwt(x.requires_grad_())[1]**2).sum(), x, create_graph=True)
    monkeypatch.setattr(haar_triton, 'applies', lambda t: t.dim() == 4)
    calls = []
    launch = haar_triton._launch
    monkeypatch.setattr(haar_triton, '_launch',
                        lambda *a, **k: calls.append(1) or launch(*a, **k))
    torch.testing.assert_close(haar_dwt_packed(x), expected)
    grads = torch.autograd.grad(
        (haar_dwt(x)[1]**2).sum(), x, create_graph=True)
    torch.testing.assert_close(grads[0], expected_grads[0])
    second, = torch.autograd.grad(grads[0].sum(), x)
    monkeypatch.setattr(haar_triton, 'applies', lambda t: False)
    expected_second, = torch.autograd.grad(expected_grads[0].sum(), x)
    torch.testing.assert_close(second, expected_second)
    assert len(calls) >= 4


def test_applies_to_4d_cuda_tensors_only():
    assert not haar_triton_module.applies(torch.zeros(1, 1, 2, 2))
    meta = torch.zeros(1, 1, 2, 2, device='meta')
    assert not haar_triton_module.applies(meta)
