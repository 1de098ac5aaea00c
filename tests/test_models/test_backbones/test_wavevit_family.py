# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Wave-ViT and SVT (ScatteringViT, Wave-ViT's network with a scattering
first stage) against their authors' code, on fixtures made by
tests/data/make_wavevit_fixtures.py and make_svt_fixtures.py (weights from
seeded_weights.py), and what both backbones share. SVT's own behaviour
(its low-pass filter's sizes) is in test_svt.py."""
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope

from mmseg_wavemix.models.backbones import ScatteringViT, WaveViT
from mmseg_wavemix.models.utils import svt_convert, wavevit_convert

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
# the fixed filters of the authors' wavelet transforms, which their
# checkpoints hold and ours do not
FAMILY = {
    'wavevit': dict(backbone=WaveViT, convert=wavevit_convert,
                    name='Wave-ViT', filter_key='block1.0.attn.dwt.w_ll',
                    filter=torch.ones(1, 1, 2, 2).half()),
    'svt': dict(backbone=ScatteringViT, convert=svt_convert, name='SVT',
                filter_key='block1.0.attn.xfm.h0o',
                filter=torch.ones(1, 1, 13, 1)),
}
FAMILIES = pytest.mark.parametrize('family', list(FAMILY))


@pytest.fixture(scope='module', params=list(FAMILY))
def family_fixtures(request):
    return request.param, torch.load(
        osp.join(DATA_DIR, f'{request.param}_reference_fixtures.pth'),
        weights_only=True)


def authors_weights(family, case, with_head=False):
    return FAMILY[family]['convert'](
        seeded_state_dict(case['shapes'], case['seed']), with_head=with_head)


def build_classifier(family, arch, num_classes):
    # first: makes mmpretrain importable (torchvision, see compat) and
    # registers the backbones there
    import mmseg_wavemix.classification  # noqa: F401  isort:skip
    from mmpretrain.registry import MODELS
    in_channels, num_heads = HEADS[arch]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type=FAMILY[family]['backbone'].__name__,
                    arch=arch,
                    out_indices=-1,
                    final_norm=False),
                head=dict(
                    type='WaveViTClsHead',
                    num_classes=num_classes,
                    in_channels=in_channels,
                    num_heads=num_heads)))


def test_stage_features_equal_the_authors(family_fixtures):
    """Wave-ViT S and B at 64x64 and 96x128; SVT S and L at 224x224 (their
    code runs at that size only)."""
    family, fixtures = family_fixtures
    for case in fixtures['cases']:
        model = FAMILY[family]['backbone'](case['arch']).eval()
        model.load_state_dict(
            {k[len('backbone.'):]: v
             for k, v in authors_weights(family, case).items()},
            strict=True)
        with torch.no_grad():
            outs = model(case['inputs'])
        n, _, h, w = case['inputs'].shape
        for i, (ours, theirs) in enumerate(zip(outs, case['features'])):
            assert ours.shape == theirs.shape == (
                n, model.embed_dims[i], h // 2**(i + 2), w // 2**(i + 2))
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_classifier_logits_equal_the_authors(family_fixtures):
    family, fixtures = family_fixtures
    for case in fixtures['cases']:
        model = build_classifier(family, case['arch'],
                                 fixtures['num_classes'])
        model.load_state_dict(
            authors_weights(family, case, with_head=True), strict=True)
        with torch.no_grad():
            logits = model.eval()(case['inputs'], mode='tensor')
        torch.testing.assert_close(logits, case['logits'], rtol=0,
                                   atol=1e-4)


@pytest.mark.parametrize('arch', ['s', 'b', 'l'])
def test_parameter_counts_equal_the_authors(family_fixtures, arch):
    """Wave-ViT S 19,377,904 / B 29,337,744 / L 53,296,120 alone, 22,690,176
    / 33,516,128 / 57,474,504 with their ImageNet heads; SVT 18,740,320 /
    28,700,160 / 50,415,616 and 22,052,592 / 32,878,544 / 54,594,000."""
    family, fixtures = family_fixtures
    expected = fixtures['num_params'][arch]
    backbone = FAMILY[family]['backbone'](arch)
    assert sum(p.numel() for p in backbone.parameters()) == \
        expected['backbone']
    classifier = build_classifier(family, arch, 1000)
    assert sum(p.numel() for p in classifier.parameters()) == \
        expected['with_heads']


def test_converter_drops_filters_and_heads_and_names_strangers(
        family_fixtures):
    family, fixtures = family_fixtures
    convert, name = FAMILY[family]['convert'], FAMILY[family]['name']
    case = fixtures['cases'][0]
    weights = seeded_state_dict(case['shapes'], case['seed'])
    weights[FAMILY[family]['filter_key']] = FAMILY[family]['filter']
    converted = convert(
        {'state_dict': {f'module.{k}': v
                        for k, v in weights.items()}})
    assert all(k.startswith('backbone.') for k in converted)
    assert f'backbone.{FAMILY[family]["filter_key"]}' not in converted
    assert 'backbone.head.weight' not in converted
    with_head = convert(weights, with_head=True)
    assert 'head.fc.weight' in with_head and 'head.norm.weight' in with_head
    assert 'backbone.norm4.weight' not in with_head
    with pytest.raises(ValueError, match=f'not {name} weights'):
        convert({**weights, 'fc.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match=f'no {name} backbone'):
        convert({'head.weight': torch.zeros(1)})


@FAMILIES
@pytest.mark.parametrize('size', [(200, 208), (225, 233), (37, 45)])
def test_any_input_size(family, size):
    """Odd stage sizes (Wave-ViT's code fails on 200, 225, 232 px; SVT's
    runs at 224 only) are padded inside the wavelet transforms and cropped
    back."""
    model = FAMILY[family]['backbone'](TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    sizes = list(size)
    for i, (out, dim) in enumerate(zip(outs, TINY['embed_dims'])):
        for _ in range(2 if i == 0 else 1):  # each stride-2 conv: ceil
            sizes = [-(-s // 2) for s in sizes]
        assert out.shape == (1, dim, *sizes)
        assert torch.isfinite(out).all()


@FAMILIES
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_forward_and_backward(family, dtype):
    """AMP (CPU autocast here; tests/test_cuda.py has SVT on CUDA): forward
    and backward finite and close to fp32 (SVT's DTCWT runs in float32;
    the authors' code fails under bf16)."""
    model = FAMILY[family]['backbone'](TINY).train()
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


@FAMILIES
def test_with_cp_gives_the_same_gradients(family):
    torch.manual_seed(0)
    backbone = FAMILY[family]['backbone']
    plain, checkpointed = backbone(TINY), backbone(TINY, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        sum(o.sum() for o in model.train()(x)).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@FAMILIES
def test_out_indices_frozen_stages_and_norm_eval(family):
    backbone = FAMILY[family]['backbone']
    model = backbone(TINY, out_indices=(1, -1), frozen_stages=2,
                     norm_eval=True).train()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [24, 40]
    for name, param in model.named_parameters():
        frozen = name.startswith(('patch_embed1', 'block1', 'norm1',
                                  'patch_embed2', 'block2', 'norm2'))
        assert param.requires_grad != frozen, name
    assert all(not m.training for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))
    assert not hasattr(backbone(TINY, final_norm=False), 'norm4')


@FAMILIES
@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), 'arch must be one of'),
    (dict(arch=dict(depths=[1])), 'custom arch'),
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
])
def test_bad_arguments(family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FAMILY[family]['backbone'](**kwargs)
