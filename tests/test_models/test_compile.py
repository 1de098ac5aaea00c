# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Every backbone compiles as one graph (``torch.compile(fullgraph=True)``
raises at a graph break), forward and backward, with the eager numbers:
graph breaks are what made a compiled WaveMix slower than eager on a GPU.
AOT autograd without code generation (``aot_eager``) keeps this fast on
CPU; what Inductor generates from the graph is measured by
``tools/benchmark.py`` entries with ``compile``."""
import copy

import pytest
import torch

from mmseg_wavemix.models.backbones import (ScatteringViT, WaveMix, WaveViT,
                                            WTConvNeXt)
from mmseg_wavemix.ops import haar_dwt, haar_dwt_packed, haar_idwt

TINY_VIT = dict(
    stem_hidden_dim=8, embed_dims=[16] * 4, num_heads=[1, 2, 2, 4],
    mlp_ratios=[2] * 4, depths=[1] * 4, sr_ratios=[4, 2, 1, 1])
BACKBONES = {
    'wavemix': lambda: WaveMix(embed_dims=16, depth=2, level=3),
    'wavemix-memory-efficient': lambda: WaveMix(
        embed_dims=16, depth=2, level=3, memory_efficient=True),
    'wavevit': lambda: WaveViT(TINY_VIT),
    'svt': lambda: ScatteringViT(TINY_VIT),
    'wtconvnext': lambda: WTConvNeXt(
        dict(depths=[1] * 4, channels=[16] * 4, wt_levels=[2, 2, 1, 1])),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbone_compiles_as_one_graph_with_eager_gradients(name):
    torch.manual_seed(0)
    model = BACKBONES[name]().train()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 64, 96)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    for module, forward in ((model, compiled), (reference, reference)):
        outs = forward(x)
        sum(o.square().mean() for o in outs).backward()
        module.outs = outs
    for a, b in zip(model.outs, reference.outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for (key, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6,
                                   msg=key)


@pytest.mark.parametrize('size', [(8, 12), (7, 9)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_haar_in_a_graph_equals_the_eager_kernels(size, channels_last):
    """In a compiled graph the transform is out-of-place arithmetic (the
    eager CPU kernels write into views, which Dynamo cannot trace)."""
    x = torch.randn(2, 4, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def transforms(x):
        ll, highs = haar_dwt(x)
        return ll, highs, haar_dwt_packed(x), haar_idwt(ll, highs,
                                                        output_size=size)

    compiled = torch.compile(transforms, backend='eager', fullgraph=True)
    for a, b in zip(compiled(x), transforms(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
