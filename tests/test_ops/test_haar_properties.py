# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Property tests over random sizes, batch sizes and dtypes."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmseg_wavemix.models.backbones import WaveMix

from .haar_multilevel import haar_wavedec2, haar_waverec2

DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16])
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 5e-2}


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    levels=st.integers(1, 4),
    dtype=DTYPES,
    seed=st.integers(0, 2**16))
def test_dwt_is_invertible(batch, channels, height, width, levels, dtype,
                           seed):
    x = torch.randn(batch, channels, height, width,
                    generator=torch.Generator().manual_seed(seed)).to(dtype)
    ll, highs = haar_wavedec2(x, levels)
    size = (height, width)
    for highs_k in highs:
        size = tuple(-(-n // 2) for n in size)  # ceil(n / 2) per level
        assert highs_k.shape == (batch, channels, 3, *size)
        assert highs_k.dtype == dtype
    assert ll.shape == (batch, channels, *size)
    rec = haar_waverec2(ll, highs)[..., :height, :width]
    tol = TOLERANCE[dtype] * max(1., x.abs().max().item())
    torch.testing.assert_close(rec.double(), x.double(), atol=tol, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 2),
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    level=st.integers(1, 4),
    stem_stride=st.integers(1, 2),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_backbone_any_size(batch, height, width, level, stem_stride, dtype):
    model = WaveMix(embed_dims=8, depth=1, level=level,
                    stem_stride=stem_stride).eval().to(dtype)
    with torch.no_grad():
        out, = model(torch.randn(batch, 3, height, width, dtype=dtype))
    stride = stem_stride**2
    assert out.shape == (batch, 8, -(-height // stride), -(-width // stride))
    assert out.dtype == dtype and torch.isfinite(out).all()
