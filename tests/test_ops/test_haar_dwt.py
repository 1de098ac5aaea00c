# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
from pytorch_wavelets import DWTForward

from mmseg_wavemix.ops import (HaarDWT, haar_dwt, haar_idwt, haar_wavedec2,
                               haar_waverec2)

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
    with pytest.raises(ValueError, match='highs must have shape'):
        haar_idwt(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2, 2))
