# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The level-1 DTCWT: pytorch_wavelets' numbers forward and inverse, exact
gradients, float32 under autocast, no filters in the state dict, odd sizes
cropped back, traceable."""
import pytest
import torch
from pytorch_wavelets import DTCWTForward, DTCWTInverse

from mmseg_wavemix.ops import DTCWT


@pytest.mark.parametrize('size', [(28, 36), (6, 8), (57, 31)])
def test_equals_pytorch_wavelets_and_reconstructs(size):
    x = torch.randn(2, 8, *size)
    low, highs = DTCWT()(x)
    ref_low, ref_highs = DTCWTForward(
        J=1, biort='near_sym_b', qshift='qshift_b')(x)
    h, w = (s + s % 2 for s in size)
    assert low.shape == (2, 8, h, w)
    assert highs.shape == (2, 8, 6, h // 2, w // 2, 2)
    torch.testing.assert_close(low, ref_low, rtol=0, atol=1e-6)
    torch.testing.assert_close(highs, ref_highs[0], rtol=0, atol=1e-6)
    inverse = DTCWT().inverse(low, highs, size)
    reference = DTCWTInverse(biort='near_sym_b', qshift='qshift_b')(
        (low, [highs]))
    torch.testing.assert_close(
        inverse, reference[..., :size[0], :size[1]], rtol=0, atol=1e-6)
    torch.testing.assert_close(inverse, x, rtol=0, atol=1e-5)


def test_gradients_are_exact_and_equal_pytorch_wavelets():
    """Autograd through plain ops (in float64 for float64 inputs): exact
    (gradcheck), and equal to pytorch_wavelets' hand-written backward."""
    dtcwt = DTCWT()
    x = torch.randn(1, 2, 10, 12, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(dtcwt, (x, ))
    low, highs = (t.detach().requires_grad_() for t in dtcwt(x))
    torch.autograd.gradcheck(
        lambda low, highs: dtcwt.inverse(low, highs, (9, 12)), (low, highs))

    forward = DTCWTForward(J=1, biort='near_sym_b', qshift='qshift_b')
    inverse = DTCWTInverse(biort='near_sym_b', qshift='qshift_b')
    weights = torch.randn_like(low), torch.randn_like(highs)
    ref_low, ref_highs = forward.double()(x)
    grads = [
        torch.autograd.grad((a * weights[0]).sum() +
                            (b * weights[1]).sum(), x)[0]
        for a, b in (dtcwt(x), (ref_low, ref_highs[0]))
    ]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)
    out_weight = torch.randn(1, 2, 10, 12, dtype=torch.float64)
    grads = [
        torch.autograd.grad((out * out_weight).sum(), (low, highs))
        for out in (dtcwt.inverse(low, highs, (10, 12)),
                    inverse.double()((low, [highs])))
    ]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_traceable():
    """mmengine's FLOP counter and the ONNX exporter trace the model;
    pytorch_wavelets' numpy indexing breaks tracing."""
    dtcwt = DTCWT()
    traced = torch.jit.trace(lambda x: dtcwt.inverse(*dtcwt(x), (16, 16)),
                             torch.randn(1, 3, 16, 16))
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(traced(x), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize('size', [(13, 14), (15, 17), (1, 2)])
def test_odd_sizes_are_cropped_back(size):
    dtcwt = DTCWT()
    x = torch.randn(1, 3, *size)
    low, highs = dtcwt(x)
    assert low.shape[-2:] == tuple(s + s % 2 for s in size)
    torch.testing.assert_close(dtcwt.inverse(low, highs, size), x, rtol=0,
                               atol=1e-5)


def test_filters_follow_the_module_but_are_not_saved():
    dtcwt = DTCWT()
    assert dict(dtcwt.state_dict()) == {}
    assert len(list(dtcwt.buffers())) == 4  # h0, h1, g0, g1
    assert all(b.dtype == torch.float64 for b in dtcwt.double().buffers())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_float32_under_autocast_with_gradients(dtype):
    """pytorch_wavelets' backward fails on bf16; here the transform runs in
    float32 whatever the autocast dtype or the input's."""
    dtcwt = DTCWT()
    x = torch.randn(1, 4, 16, 16).to(dtype)
    grads = []
    for inputs, autocast in ((x, True), (x.float(), False)):
        inputs.requires_grad_()
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            low, highs = dtcwt(inputs)
            out = dtcwt.inverse(low * 2, highs, (16, 16))
        assert low.dtype == highs.dtype == out.dtype == torch.float32
        out.square().sum().backward()
        grads.append(inputs.grad)
    assert grads[0].dtype == dtype
    torch.testing.assert_close(grads[0].float(), grads[1], rtol=0.02,
                               atol=0.05)
