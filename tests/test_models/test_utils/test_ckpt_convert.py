# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Parity with the authors' package: converted weights give the same logits."""
import pytest
import torch
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

from mmseg_wavemix.models.utils import wavemix_convert


def authors_backbone(kwargs, **extra):
    """Our WaveMix backbone config for the authors' constructor arguments."""
    return dict(
        type='WaveMix',
        embed_dims=kwargs['final_dim'],
        depth=kwargs['depth'],
        level=kwargs['level'],
        mlp_ratio=kwargs['mult'],
        ff_channels=kwargs['ff_channel'],
        dropout=kwargs['dropout'],
        stem_stride=kwargs.get('stride', 2),
        **extra)


def build_segmentor(kwargs, dwt_backend='native'):
    """Our EncoderDecoder with the sizes of the authors' model."""
    dims = kwargs['final_dim']
    return MODELS.build(
        dict(
            type='EncoderDecoder',
            backbone=authors_backbone(kwargs, dwt_backend=dwt_backend),
            decode_head=dict(
                type='WaveMixHead',
                in_channels=dims,
                channels=dims // 4,
                num_classes=kwargs['num_classes'],
                dropout_ratio=0.,
                loss_decode=dict(type='CrossEntropyLoss'))))


@pytest.mark.parametrize('dwt_backend', ['native', 'pytorch_wavelets'])
@pytest.mark.parametrize('case', range(4), ids=lambda i: f'level{i + 1}')
def test_segmentation_parity(reference_fixtures, case, dwt_backend):
    fixture = reference_fixtures['segmentation'][case]
    assert fixture['kwargs']['level'] == case + 1
    model = build_segmentor(fixture['kwargs'], dwt_backend).eval()
    assert sum(p.numel() for p in model.parameters()) == fixture['num_params']
    state_dict = wavemix_convert(fixture['state_dict'])
    missing, unexpected = model.load_state_dict(state_dict, strict=True)
    assert not missing and not unexpected

    inputs = fixture['inputs']
    with torch.no_grad():
        logits = model.encode_decode(
            inputs, [dict(img_shape=inputs.shape[-2:])] * len(inputs))
    assert logits.shape == fixture['outputs'].shape
    torch.testing.assert_close(logits, fixture['outputs'], atol=1e-4, rtol=0)


def test_prefixed_and_wrapped_state_dicts(reference_fixtures):
    state_dict = reference_fixtures['segmentation'][1]['state_dict']
    expected = wavemix_convert(state_dict)
    wrapped = {'state_dict': {'module.' + k: v for k, v in state_dict.items()}}
    assert list(wavemix_convert(wrapped)) == list(expected)


def test_rejects_foreign_weights():
    with pytest.raises(ValueError, match='not WaveMix weights'):
        wavemix_convert({'backbone.conv1.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='no WaveMix weights'):
        wavemix_convert({})


def build_classifier(kwargs):
    """mmpretrain's ImageClassifier with our backbone, sized as the authors'
    wavemix.classification.WaveMix."""
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    import mmseg_wavemix.classification  # noqa: F401  (registers it there)
    dims = kwargs['final_dim']
    patchify = kwargs['initial_conv'] == 'pachify'  # the authors' spelling
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return PRETRAIN_MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=authors_backbone(
                    kwargs,
                    stem_type='patchify' if patchify else 'strided',
                    patch_size=kwargs.get('patch_size', 4)),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(
                    type='LinearClsHead',
                    num_classes=kwargs['num_classes'],
                    in_channels=dims)))


@pytest.mark.parametrize('case', range(2), ids=['patchify', 'strided'])
def test_classification_parity(reference_fixtures, case):
    fixture = reference_fixtures['classification'][case]
    model = build_classifier(fixture['kwargs']).eval()
    assert sum(p.numel() for p in model.parameters()) == fixture['num_params']
    model.load_state_dict(wavemix_convert(fixture['state_dict']), strict=True)
    with torch.no_grad():
        logits = model(fixture['inputs'], mode='tensor')
    torch.testing.assert_close(logits, fixture['outputs'], atol=1e-4, rtol=0)
