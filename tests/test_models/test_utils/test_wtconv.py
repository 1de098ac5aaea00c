# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from mmseg_wavemix.models.utils import WTConv2d


def pywt_dwt(x):
    """(N, C, H, W) -> (N, C, 4, H/2, W/2) bands LL, LH, HL, HH by PyWavelets
    (its cA, cH, cV, cD)."""
    ll, (lh, hl, hh) = pywt.dwt2(x.numpy(), 'haar', axes=(-2, -1))
    return torch.from_numpy(np.stack([ll, lh, hl, hh], axis=2))


def pywt_idwt(ll, highs):
    x = pywt.idwt2((ll.numpy(), tuple(h.numpy() for h in highs.unbind(2))),
                   'haar',
                   axes=(-2, -1))
    return torch.from_numpy(x)


def reference_wtconv(layer, x):
    """The paper's equations, level by level:

        X_LL^(i), X_H^(i) = WT(X_LL^(i-1))
        Y^(i) = Conv(W^(i), X^(i))
        Z^(i) = IWT(Y_LL^(i) + Z^(i+1), Y_H^(i))
        output = Conv(W^(0), X) + Z^(1)

    with odd sizes zero-padded per level and cropped back."""
    pad = layer.kernel_size // 2
    channels = layer.in_channels
    base = F.conv2d(
        x, layer.base_conv.weight, layer.base_conv.bias, padding=pad,
        groups=channels) * layer.base_scale.weight
    levels = []
    ll = x
    for conv, scale in zip(layer.wavelet_convs, layer.wavelet_scale):
        size = ll.shape[-2:]
        ll = F.pad(ll, (0, ll.shape[-1] % 2, 0, ll.shape[-2] % 2))
        bands = pywt_dwt(ll)
        ll = bands[:, :, 0]
        y = F.conv2d(
            bands.flatten(1, 2), conv.weight, padding=pad,
            groups=4 * channels) * scale.weight
        levels.append((y.view_as(bands), size))
    z = 0
    for y, (h, w) in reversed(levels):
        z = pywt_idwt(y[:, :, 0] + z, y[:, :, 1:])[..., :h, :w]
    return (base + z)[..., ::layer.stride, ::layer.stride]


def randomized(layer):
    """Random weights everywhere, scales included (not their 1 / 0.1 init)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_()
    return layer


@pytest.mark.parametrize('size', [(32, 32), (23, 37), (9, 6)])
@pytest.mark.parametrize('wt_levels', [1, 2, 4])
@pytest.mark.parametrize('stride', [1, 2])
def test_equals_the_reference_from_the_equations(size, wt_levels, stride):
    layer = randomized(
        WTConv2d(3, kernel_size=3, stride=stride, wt_levels=wt_levels))
    layer = layer.double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x)
        expected = reference_wtconv(layer, x)
    assert out.shape == (2, 3, -(-size[0] // stride), -(-size[1] // stride))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('bias', [True, False])
def test_base_branch_alone_is_a_depthwise_conv(bias):
    layer = randomized(WTConv2d(4, kernel_size=5, wt_levels=2, bias=bias))
    conv = torch.nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=bias)
    with torch.no_grad():
        for scale in layer.wavelet_scale:
            scale.weight.zero_()
        layer.base_scale.weight.fill_(1)
        conv.load_state_dict(layer.base_conv.state_dict())
    no_levels = WTConv2d(4, kernel_size=5, wt_levels=0, bias=bias)
    no_levels.load_state_dict(layer.state_dict(), strict=False)
    x = torch.randn(2, 4, 15, 20)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x))
        torch.testing.assert_close(no_levels(x), conv(x))


def test_gradients_reach_every_level():
    layer = WTConv2d(4, kernel_size=3, wt_levels=3)
    x = torch.randn(2, 4, 24, 20, requires_grad=True)
    layer(x).square().sum().backward()
    for i in range(3):
        assert layer.wavelet_convs[i].weight.grad.abs().sum() > 0, i
        assert layer.wavelet_scale[i].weight.grad.abs().sum() > 0, i
    assert layer.base_conv.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_gradcheck_with_odd_sizes():
    layer = randomized(WTConv2d(2, kernel_size=3, wt_levels=2)).double()
    x = torch.randn(1, 2, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x, ))


def test_receptive_field_grows_with_levels():
    """A 3x3 kernel on its own sees 1 pixel each way; two levels reach at
    least 2 ** 2 pixels away."""
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16, 16] = 1
    for levels, reach in [(0, 1), (2, 4)]:
        layer = WTConv2d(1, kernel_size=3, wt_levels=levels)
        with torch.no_grad():
            response = layer(x) - layer(torch.zeros_like(x))  # minus bias
        changed = response[0, 0].abs() > 1e-7
        rows = changed.any(dim=1).nonzero()
        assert rows.max() - 16 >= reach and 16 - rows.min() >= reach
        if levels == 0:
            assert rows.max() - 16 == 1


@pytest.mark.parametrize('channels,k,levels,bias', [(8, 5, 3, True),
                                                    (6, 3, 1, False)])
def test_parameter_count(channels, k, levels, bias):
    layer = WTConv2d(channels, kernel_size=k, wt_levels=levels, bias=bias)
    base = channels * k * k + (channels if bias else 0) + channels
    per_level = 4 * channels * k * k + 4 * channels
    assert sum(p.numel() for p in layer.parameters()) == \
        base + levels * per_level


def authors_state_dict(layer, wavelet='haar'):
    """State dict as the authors' layer saves it: with its fixed filters."""
    w = pywt.Wavelet(wavelet)
    lo, hi = torch.tensor(w.dec_lo[::-1]), torch.tensor(w.dec_hi[::-1])
    filters = torch.stack([
        lo[None] * lo[:, None], lo[None] * hi[:, None], hi[None] * lo[:, None],
        hi[None] * hi[:, None]
    ])[:, None].repeat(layer.in_channels, 1, 1, 1).float()
    return dict(layer.state_dict(), wt_filter=filters, iwt_filter=filters)


def test_loads_the_authors_checkpoint_layout():
    layer = randomized(WTConv2d(4, wt_levels=2))
    fresh = WTConv2d(4, wt_levels=2)
    fresh.load_state_dict(authors_state_dict(layer))  # strict
    x = torch.randn(1, 4, 16, 16)
    torch.testing.assert_close(fresh(x), layer(x))
    with pytest.raises(ValueError, match='not a Haar filter'):
        fresh.load_state_dict(authors_state_dict(layer, 'db2'))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match='depthwise'):
        WTConv2d(4, 8)
    with pytest.raises(ValueError, match='odd'):
        WTConv2d(4, kernel_size=4)
    with pytest.raises(ValueError, match='stride'):
        WTConv2d(4, stride=3)
    with pytest.raises(ValueError, match='wt_levels'):
        WTConv2d(4, wt_levels=-1)
    with pytest.raises(ValueError, match='Haar'):
        WTConv2d(4, wt_type='db2')
    with pytest.raises(ValueError, match=r'\(N, 4, H, W\)'):
        WTConv2d(4)(torch.randn(1, 3, 8, 8))
