# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Wave-ViT against the authors' code (fixtures made by
tests/data/make_wavevit_fixtures.py; weights from seeded_weights.py)."""
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope

from mmseg_wavemix.models.backbones import WaveViT
from mmseg_wavemix.models.utils import wavevit_convert
from ...conftest import DATA_DIR

sys.path.insert(0, DATA_DIR)
from seeded_weights import seeded_state_dict  # noqa: E402

TINY = dict(
    stem_hidden_dim=8,
    embed_dims=[16, 24, 32, 40],
    num_heads=[1, 2, 2, 4],
    mlp_ratios=[2, 2, 2, 2],
    depths=[1, 1, 1, 1],
    sr_ratios=[4, 2, 1, 1])
HEADS = dict(s=(448, 14), b=(512, 16), l=(512, 16))


@pytest.fixture(scope='module')
def fixtures():
    return torch.load(
        osp.join(DATA_DIR, 'wavevit_reference_fixtures.pth'),
        weights_only=True)


def authors_weights(case, with_head=False):
    return wavevit_convert(
        seeded_state_dict(case['shapes'], case['seed']), with_head=with_head)


def test_stage_features_equal_the_authors(fixtures):
    for case in fixtures['cases']:  # S and B, 64x64 and 96x128
        model = WaveViT(case['arch']).eval()
        model.load_state_dict(
            {k[len('backbone.'):]: v
             for k, v in authors_weights(case).items()},
            strict=True)
        with torch.no_grad():
            outs = model(case['inputs'])
        n, _, h, w = case['inputs'].shape
        for i, (ours, theirs) in enumerate(zip(outs, case['features'])):
            assert ours.shape == theirs.shape == (
                n, model.embed_dims[i], h // 2**(i + 2), w // 2**(i + 2))
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def build_classifier(arch, num_classes):
    import mmseg_wavemix.classification  # noqa: F401  (registers it there)
    from mmpretrain.registry import MODELS
    in_channels, num_heads = HEADS[arch]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type='WaveViT', arch=arch, out_indices=-1,
                    final_norm=False),
                head=dict(
                    type='WaveViTClsHead',
                    num_classes=num_classes,
                    in_channels=in_channels,
                    num_heads=num_heads)))


def test_classifier_logits_equal_the_authors(fixtures):
    for case in fixtures['cases']:
        model = build_classifier(case['arch'], fixtures['num_classes'])
        model.load_state_dict(authors_weights(case, with_head=True),
                              strict=True)
        with torch.no_grad():
            logits = model.eval()(case['inputs'], mode='tensor')
        torch.testing.assert_close(logits, case['logits'], rtol=0,
                                   atol=1e-4)


@pytest.mark.parametrize('arch', ['s', 'b', 'l'])
def test_parameter_counts_equal_the_authors(fixtures, arch):
    expected = fixtures['num_params'][arch]
    # S 19,377,904 / B 29,337,744 / L 53,296,120 alone; 22,690,176 /
    # 33,516,128 / 57,474,504 with their ImageNet heads
    assert sum(p.numel() for p in WaveViT(arch).parameters()) == \
        expected['backbone']
    classifier = build_classifier(arch, 1000)
    assert sum(p.numel() for p in classifier.parameters()) == \
        expected['with_heads']


@pytest.mark.parametrize('size', [200, 225, 232, 37])
def test_any_input_size(size):
    """Odd stage sizes (the authors' code fails on 200, 225, 232 px) are
    zero-padded inside the wavelet transform and cropped back."""
    model = WaveViT(TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, size, size + 8))
    sizes = [size, size + 8]
    for i, (out, dim) in enumerate(zip(outs, TINY['embed_dims'])):
        for _ in range(2 if i == 0 else 1):  # each stride-2 conv: ceil
            sizes = [-(-s // 2) for s in sizes]
        assert out.shape == (1, dim, *sizes)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_forward_and_backward(dtype):
    """AMP (CPU autocast here; tests/test_cuda.py has no Wave-ViT case yet):
    forward and backward in the low dtype, close to fp32."""
    model = WaveViT(TINY).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast('cpu', dtype=dtype):
        outs = model(x)
    assert all(o.dtype == dtype for o in outs)
    sum(o.float().square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        reference = model.eval()(x)
        with torch.autocast('cpu', dtype=dtype):
            low = model(x)
    for a, b in zip(low, reference):
        torch.testing.assert_close(a.float(), b, rtol=0.1, atol=0.1)


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain, checkpointed = WaveViT(TINY), WaveViT(TINY, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        sum(o.sum() for o in model.eval()(x)).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_out_indices_frozen_stages_and_norm_eval():
    model = WaveViT(TINY, out_indices=(1, -1), frozen_stages=2,
                    norm_eval=True).train()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [24, 40]
    for name, param in model.named_parameters():
        frozen = name.startswith(('patch_embed1', 'block1', 'norm1',
                                  'patch_embed2', 'block2', 'norm2'))
        assert param.requires_grad != frozen, name
    assert all(not m.training for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))
    assert not hasattr(WaveViT(TINY, final_norm=False), 'norm4')


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), 'arch must be one of'),
    (dict(arch=dict(depths=[1])), 'custom arch'),
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WaveViT(**kwargs)


def test_converter_drops_filters_and_heads_and_names_strangers(fixtures):
    case = fixtures['cases'][0]
    weights = seeded_state_dict(case['shapes'], case['seed'])
    weights['block1.0.attn.dwt.w_ll'] = torch.ones(1, 1, 2, 2).half()
    converted = wavevit_convert(
        {'state_dict': {f'module.{k}': v
                        for k, v in weights.items()}})
    assert all(k.startswith('backbone.') for k in converted)
    assert 'backbone.block1.0.attn.dwt.w_ll' not in converted
    assert 'backbone.head.weight' not in converted
    with_head = wavevit_convert(weights, with_head=True)
    assert 'head.fc.weight' in with_head and 'head.norm.weight' in with_head
    assert 'backbone.norm4.weight' not in with_head
    with pytest.raises(ValueError, match='not Wave-ViT weights'):
        wavevit_convert({**weights, 'fc.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='no Wave-ViT backbone'):
        wavevit_convert({'head.weight': torch.zeros(1)})
