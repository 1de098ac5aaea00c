# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The level-1 DTCWT wrapper: pytorch_wavelets' numbers, in float32 under
autocast, no filters in the state dict, odd sizes cropped back."""
import pytest
import torch
from pytorch_wavelets import DTCWTForward, DTCWTInverse

from mmseg_wavemix.ops.dtcwt import DTCWT


def test_equals_pytorch_wavelets_and_reconstructs():
    x = torch.randn(2, 8, 28, 36)
    low, highs = DTCWT()(x)
    ref_low, ref_highs = DTCWTForward(
        J=1, biort='near_sym_b', qshift='qshift_b')(x)
    assert low.shape == (2, 8, 28, 36) and highs.shape == (2, 8, 6, 14, 18,
                                                           2)
    torch.testing.assert_close(low, ref_low, rtol=0, atol=0)
    torch.testing.assert_close(highs, ref_highs[0], rtol=0, atol=0)
    inverse = DTCWT().inverse(low, highs, (28, 36))
    torch.testing.assert_close(
        inverse,
        DTCWTInverse(biort='near_sym_b', qshift='qshift_b')((low, [highs])),
        rtol=0, atol=0)
    torch.testing.assert_close(inverse, x, rtol=0, atol=1e-5)


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
    assert len(list(dtcwt.buffers())) == 12  # 6 analysis + 6 synthesis
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
