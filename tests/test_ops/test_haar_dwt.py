# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import importlib

import pytest
import torch
from pytorch_wavelets import DWTForward

from mmseg_wavemix.ops import HaarDWT, haar_dwt, haar_dwt_packed, haar_idwt

from .haar_multilevel import haar_wavedec2, haar_waverec2

haar_kernels = importlib.import_module('mmseg_wavemix.ops.haar_kernels')

SHAPES = [(2, 3, 8, 8), (1, 2, 7, 5), (2, 4, 33, 18), (1, 1, 1, 1)]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('levels', [1, 3])
def test_equals_pytorch_wavelets(shape, levels):
    x = torch.randn(*shape, requires_grad=True)
    ref_ll, ref_highs = DWTForward(J=levels, wave='haar', mode='zero')(x)
    ll, highs = haar_wavedec2(x, levels)
    torch.testing.assert_close(ll, ref_ll, atol=1e-5, rtol=0)
    assert len(highs) == levels
    for ours, ref in zip(highs, ref_highs):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)

    # gradients of a random functional of all sub-bands
    weights = [torch.randn_like(t) for t in [ll, *highs]]
    ours = sum((w * t).sum() for w, t in zip(weights, [ll, *highs]))
    ref = sum((w * t).sum() for w, t in zip(weights, [ref_ll, *ref_highs]))
    grad, = torch.autograd.grad(ours, x)
    ref_grad, = torch.autograd.grad(ref, x)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=0)


def test_sub_band_order_on_one_block():
    # [[a, b], [c, d]] = [[1, 2], [3, 5]]
    x = torch.tensor([[[[1., 2.], [3., 5.]]]])
    ll, highs = haar_dwt(x)
    assert ll.item() == pytest.approx((1 + 2 + 3 + 5) / 2)
    lh, hl, hh = highs[0, 0, :, 0, 0].tolist()
    assert lh == pytest.approx((1 + 2 - 3 - 5) / 2)
    assert hl == pytest.approx((1 - 2 + 3 - 5) / 2)
    assert hh == pytest.approx((1 - 2 - 3 + 5) / 2)


def test_gradcheck():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(haar_dwt, (x, ))
    assert torch.autograd.gradgradcheck(haar_dwt, (x, ))
    ll, highs = haar_dwt(x.detach())
    assert torch.autograd.gradcheck(
        haar_idwt, (ll.requires_grad_(), highs.requires_grad_()))


def textbook_dwt(x):
    """The four 2x2-block formulas of the module docstring (even sizes)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    highs = torch.stack([a + b - c - d, a - b + c - d, a - b - c + d], -3)
    return (a + b + c + d) / 2, highs / 2


@pytest.mark.parametrize('chunk_numel', [1, 800, 1 << 20])
@pytest.mark.parametrize('channels_last', [False, True])
def test_chunked_rows_any_layout(chunk_numel, channels_last, monkeypatch):
    # 1 or 3 output rows per chunk (the last one ragged: 11 rows), or all.
    monkeypatch.setattr(haar_kernels, '_CHUNK_NUMEL', chunk_numel)
    x = torch.randn(2, 5, 22, 12, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ll, highs = haar_dwt(x)
    ref_ll, ref_highs = textbook_dwt(x)
    torch.testing.assert_close(ll, ref_ll)
    torch.testing.assert_close(highs, ref_highs)
    torch.testing.assert_close(haar_idwt(ll, highs), x)
    # the outputs keep the layout of the input
    assert ll.is_contiguous(
        memory_format=torch.channels_last) == channels_last
    assert highs.flatten(1, 2).is_contiguous(
        memory_format=torch.channels_last) == channels_last
    assert haar_idwt(ll, highs).is_contiguous(
        memory_format=torch.channels_last) == channels_last


def test_rows_chunked_on_cpu_only():
    # CPU: chunks of ~_CHUNK_NUMEL input elements; elsewhere (CUDA) one
    # chunk, as each chunk costs kernel launches. 'meta' stands in for CUDA.
    bands = (1, 64, 256, 512)
    cpu_rows = haar_kernels._band_rows_per_chunk(torch.empty(bands))
    assert cpu_rows == haar_kernels._CHUNK_NUMEL // (4 * 64 * 512)
    assert haar_kernels._band_rows_per_chunk(
        torch.empty(bands, device='meta')) == 256


@pytest.mark.parametrize('shape', [(2, 3, 8, 8), (1, 2, 7, 5), (2, 1, 6, 4)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('backend', ['native', 'pytorch_wavelets'])
def test_packed_equals_concatenated_bands(shape, channels_last, backend):
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ll, highs = HaarDWT(backend).double()(x)
    expected = torch.cat((ll, highs.flatten(1, 2)), dim=1)
    packed = HaarDWT(backend, packed=True).double()(x)
    assert packed.shape == (shape[0], 4 * shape[1], (shape[2] + 1) // 2,
                            (shape[3] + 1) // 2)
    torch.testing.assert_close(packed, expected)
    if backend == 'native' and shape[1] > 1:
        # channels last in, channels last out: the 1x1 conv after it copies
        # nothing (a concatenation of the bands would be contiguous)
        assert packed.is_contiguous(
            memory_format=torch.channels_last) == channels_last
    weight = torch.randn_like(expected)
    grad, = torch.autograd.grad((packed * weight).sum(), x)
    expected_grad, = torch.autograd.grad((expected * weight).sum(), x)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize('shape', [(0, 3, 4, 4), (1, 2, 0, 4), (2, 3, 4, 0)])
def test_empty_inputs(shape):
    x = torch.randn(*shape, requires_grad=True)
    ll, highs = haar_dwt(x)
    size = (shape[2] // 2, shape[3] // 2)
    assert ll.shape == (*shape[:2], *size)
    assert highs.shape == (*shape[:2], 3, *size)
    assert haar_dwt_packed(x).shape == (shape[0], 4 * shape[1], *size)
    (ll.sum() + highs.sum()).backward()
    assert x.grad.shape == shape


def test_packed_gradcheck():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(haar_dwt_packed, (x, ))
    assert torch.autograd.gradgradcheck(haar_dwt_packed, (x, ))
    # a view of a packed level (its LL) transformed again, as in a block
    assert torch.autograd.gradcheck(
        lambda t: haar_dwt_packed(haar_dwt_packed(t)[:, :3]), (x, ))


@pytest.mark.parametrize('shape', SHAPES)
def test_inverse_reconstructs(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    ll, highs = haar_wavedec2(x, 3)
    rec = haar_waverec2(ll, highs)[..., :shape[-2], :shape[-1]]
    torch.testing.assert_close(rec, x)
    ll1, highs1 = haar_dwt(x)
    torch.testing.assert_close(haar_idwt(ll1, highs1, shape[-2:]), x)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    x = torch.randn(2, 3, 16, 12)
    ll, highs = haar_dwt(x.to(dtype))
    ref_ll, ref_highs = haar_dwt(x)
    assert ll.dtype == highs.dtype == dtype
    torch.testing.assert_close(ll.float(), ref_ll, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(highs.float(), ref_highs, atol=2e-2, rtol=2e-2)


def test_module_backends_agree():
    x = torch.randn(2, 3, 10, 14)
    native, reference = HaarDWT('native'), HaarDWT('pytorch_wavelets')
    for ours, ref in zip(native(x), reference(x)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # the reference filters are not part of any state dict
    assert reference.state_dict() == {}


def test_bad_inputs():
    with pytest.raises(ValueError, match='dwt_backend'):
        HaarDWT('db2')
    with pytest.raises(TypeError, match='floating point'):
        haar_dwt(torch.ones(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='levels'):
        haar_wavedec2(torch.ones(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r'expects \(N, C, H, W\)'):
        haar_dwt_packed(torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match='highs must have shape'):
        haar_idwt(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2, 2))
