# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""SVT (ScatteringViT) against the authors' code (fixtures made by
tests/data/make_svt_fixtures.py; weights from seeded_weights.py)."""
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope

from mmseg_wavemix.models.backbones import ScatteringViT
from mmseg_wavemix.models.utils import svt_convert
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
        osp.join(DATA_DIR, 'svt_reference_fixtures.pth'), weights_only=True)


def authors_weights(case, with_head=False):
    return svt_convert(
        seeded_state_dict(case['shapes'], case['seed']), with_head=with_head)


def backbone_weights(case):
    return {
        k[len('backbone.'):]: v
        for k, v in authors_weights(case).items()
    }


def test_stage_features_equal_the_authors(fixtures):
    for case in fixtures['cases']:  # S and L at 224x224
        model = ScatteringViT(case['arch']).eval()
        model.load_state_dict(backbone_weights(case), strict=True)
        with torch.no_grad():
            outs = model(case['inputs'])
        for i, (ours, theirs) in enumerate(zip(outs, case['features'])):
            assert ours.shape == theirs.shape == (
                1, model.embed_dims[i], 56 // 2**i, 56 // 2**i)
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
                    type='ScatteringViT', arch=arch, out_indices=-1,
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
    # S 18,740,320 / B 28,700,160 / L 50,415,616 alone; 22,052,592 /
    # 32,878,544 / 54,594,000 with their ImageNet heads
    assert sum(p.numel() for p in ScatteringViT(arch).parameters()) == \
        expected['backbone']
    classifier = build_classifier(arch, 1000)
    assert sum(p.numel() for p in classifier.parameters()) == \
        expected['with_heads']


@pytest.mark.parametrize('size', [(512, 512), (225, 231), (37, 45)])
def test_other_input_sizes(size):
    """The authors' code runs at 224 only; here the low-pass filter is
    resized to the first stage's grid (odd grids padded by the DTCWT and
    cropped back)."""
    model = ScatteringViT(TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    sizes = list(size)
    for i, (out, dim) in enumerate(zip(outs, TINY['embed_dims'])):
        for _ in range(2 if i == 0 else 1):  # each stride-2 conv: ceil
            sizes = [-(-s // 2) for s in sizes]
        assert out.shape == (1, dim, *sizes)
        assert torch.isfinite(out).all()


def test_img_size_sizes_the_filter_and_other_sizes_resize_it():
    """At its img_size the model uses its filter as is; a model with another
    img_size loading those weights (ImageNet 224 -> ADE20K 512) gets the
    filter resized once, and gives what the first model gives for an input
    of the second size."""
    small = ScatteringViT(TINY).eval()
    assert small.block1[0].attn.complex_weight_ll.shape == (16, 56, 56)
    assert ScatteringViT(TINY, img_size=(228, 100)).block1[
        0].attn.complex_weight_ll.shape == (16, 58, 26)
    large = ScatteringViT(TINY, img_size=512).eval()
    large.load_state_dict(small.state_dict())
    assert large.block1[0].attn.complex_weight_ll.shape == (16, 128, 128)
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        for a, b in zip(small(x), large(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_resized_filter_gets_gradients():
    model = ScatteringViT(TINY).train()
    sum(o.sum() for o in model(torch.randn(1, 3, 96, 80))).backward()
    grad = model.block1[0].attn.complex_weight_ll.grad
    assert grad.shape == (16, 56, 56) and grad.abs().sum() > 0


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_forward_and_backward(dtype):
    """AMP (CPU autocast here): the DTCWT runs in float32, the rest in the
    low dtype; forward and backward finite and close to fp32. The authors'
    code fails here under bf16."""
    model = ScatteringViT(TINY).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast('cpu', dtype=dtype):
        outs = model(x)
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
    plain = ScatteringViT(TINY)
    checkpointed = ScatteringViT(TINY, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        sum(o.sum() for o in model.train()(x)).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_out_indices_frozen_stages_and_norm_eval():
    model = ScatteringViT(TINY, out_indices=(0, -1), frozen_stages=1,
                          norm_eval=True).train()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 40]
    for name, param in model.named_parameters():
        frozen = name.startswith(('patch_embed1', 'block1', 'norm1'))
        assert param.requires_grad != frozen, name
    assert all(not m.training for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), 'arch must be one of'),
    (dict(img_size=0), 'img_size'),
    (dict(arch=dict(TINY, embed_dims=[18, 24, 32, 40])), 'divisible'),
    (dict(out_indices=(4, )), 'out_indices'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScatteringViT(**kwargs)


def test_converter_drops_filters_and_heads_and_names_strangers(fixtures):
    case = fixtures['cases'][0]
    weights = seeded_state_dict(case['shapes'], case['seed'])
    weights['block1.0.attn.xfm.h0o'] = torch.ones(1, 1, 13, 1)
    weights['block1.0.attn.ifm.g1b'] = torch.ones(1, 1, 14, 1)
    converted = svt_convert(
        {'model': {f'module.{k}': v
                   for k, v in weights.items()}})
    assert all(k.startswith('backbone.') for k in converted)
    assert not any('.xfm.' in k or '.ifm.' in k for k in converted)
    assert 'backbone.head.weight' not in converted
    with_head = svt_convert(weights, with_head=True)
    assert 'head.fc.weight' in with_head and 'head.norm.weight' in with_head
    assert 'backbone.norm4.weight' not in with_head
    with pytest.raises(ValueError, match='not SVT weights'):
        svt_convert({**weights, 'fc.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='no SVT backbone'):
        svt_convert({'head.weight': torch.zeros(1)})
