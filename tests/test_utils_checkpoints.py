# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Checkpoints in the names of the authors' code are named as such, with the
converter to run; the checkpoints of ``init_cfg=dict(type='Pretrained')``
are checked like ``load_from``'s (mmengine only warns and trains on from
random weights)."""
import sys

import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmseg_wavemix.models.utils import (svt_convert, wavemix_convert,
                                        wavevit_convert)
from mmseg_wavemix.utils.checkpoints import (authors_conversion, check_fits,
                                             check_init_checkpoints,
                                             load_state_dict, pretrained_inits)
from mmseg_wavemix.utils.checks import InputError
from mmseg_wavemix.utils.cli import build_model

from .conftest import DATA_DIR, REPO_ROOT, logged_messages
from .test_models.test_utils.test_ckpt_convert import build_segmentor

WAVEVIT = ('configs/wavevit/'
           'wavevit-s_upernet_4xb2-amp-80k_cityscapes-512x1024.py')
WAVEVIT_CLS = 'configs/wavevit_cls/wavevit-s_8xb128_in1k.py'
SVT = 'configs/svt/svt-s_upernet_8xb2-amp-160k_ade20k-512x512.py'
SVT_CLS = 'configs/svt_cls/svt-s_8xb128_in1k.py'


def model_of(config, **options):
    cfg = Config.fromfile(f'{REPO_ROOT}/{config}')
    cfg.merge_from_dict(options)
    return build_model(cfg)


def authors_weights(family):
    """A state dict in the authors' names (their ImageNet heads and, for SVT,
    a DTCWT filter buffer as their code saves it) from the parity
    fixtures' shapes."""
    sys.path.insert(0, DATA_DIR)
    from seeded_weights import seeded_state_dict
    case = torch.load(f'{DATA_DIR}/{family}_reference_fixtures.pth',
                      weights_only=True)['cases'][0]
    assert case['arch'] == 's'
    weights = seeded_state_dict(case['shapes'], case['seed'])
    if family == 'svt':
        weights['block1.0.attn.xfm.h0o'] = torch.ones(1, 1, 13, 1)
    return weights


def fit_error(model, state_dict):
    with pytest.raises(InputError) as error:
        check_fits(model, state_dict, 'theirs.pth')
    return str(error.value)


def test_the_wavemix_authors_checkpoint_is_named(reference_fixtures):
    fixture = reference_fixtures['segmentation'][3]
    model = build_segmentor(fixture['kwargs'])
    message = fit_error(model, fixture['state_dict'])
    assert message.endswith(
        "it holds weights in the names of the WaveMix authors' package "
        '(wavemix==0.2.4): convert it first, python '
        'tools/convert_wavemix_weights.py theirs.pth OUT')
    check_fits(model, wavemix_convert(fixture['state_dict']), 'ours.pth')
    # ours: nothing to convert, whether or not a model is given
    assert authors_conversion(model.state_dict(), 'ours.pth', model) is None
    assert authors_conversion(model.state_dict(), 'ours.pth') is None


@pytest.mark.parametrize('family,config,command', [
    ('wavevit', WAVEVIT, 'convert_wavevit_weights.py theirs.pth OUT'),
    ('wavevit', WAVEVIT_CLS,
     'convert_wavevit_weights.py theirs.pth OUT --with-head'),
    ('svt', SVT, 'convert_svt_weights.py theirs.pth OUT'),
    ('svt', SVT_CLS, 'convert_svt_weights.py theirs.pth OUT --with-head'),
])
def test_wavevit_and_svt_checkpoints_are_named(family, config, command):
    """Each family's converter reads the other's files too: the one named
    is the one that drops the file's own filter buffers; --with-head where
    the model is mmpretrain's classifier with their heads."""
    weights = authors_weights(family)
    # the fixtures' heads have 10 classes, SVT's filters are for 224x224
    model = model_of(config, **{
        WAVEVIT: {},
        SVT: {'model.backbone.img_size': (224, 224)},
    }.get(config, {'model.head.num_classes': 10}))
    source = 'Wave-ViT' if family == 'wavevit' else 'SVT'
    assert fit_error(model, weights).endswith(
        f"it holds weights in the names of the {source} authors' code: "
        f'convert it first, python tools/{command}')
    convert = wavevit_convert if family == 'wavevit' else svt_convert
    converted = convert(weights, with_head='--with-head' in command)
    if config in (WAVEVIT, SVT):  # the backbone: the heads are mmseg's
        converted = {k[len('backbone.'):]: v for k, v in converted.items()}
        check_fits(model.backbone, converted, 'ours.pth')
        # a backbone's own state dict is ours, with its own cause
        assert fit_error(model, converted).endswith(
            "its keys lack the 'backbone.' prefix (a backbone's own state "
            "dict): set the backbone's init_cfg=dict(type='Pretrained', "
            'checkpoint=PATH) instead')
    else:
        check_fits(model, converted, 'ours.pth')


def test_a_checkpoint_with_its_weights_under_model_is_named(tmp_path):
    """The SVT authors' main.py saves {'model': ..., 'epoch': ...}, where
    mmengine finds no weights."""
    path = tmp_path / 'svt_s.pth'
    torch.save({'model': authors_weights('svt'), 'epoch': 309}, path)
    with pytest.raises(InputError) as error:
        load_state_dict(str(path))
    assert f'{path} holds no model weights' in str(error.value)
    assert str(error.value).endswith(
        f'convert it first, python tools/convert_svt_weights.py {path} OUT')


def with_init(model, **init_cfg):
    model.backbone.init_cfg = dict(type='Pretrained', **init_cfg)
    return model


def test_init_checkpoints_fit_their_module(tmp_path):
    model = model_of(WAVEVIT)
    ours = tmp_path / 'wavevit_s.pth'
    torch.save({'state_dict': wavevit_convert(authors_weights('wavevit'))},
               ours)
    check_init_checkpoints(  # as the config's comment shows
        with_init(model, checkpoint=str(ours), prefix='backbone.'))
    # mmengine reads 'backbone' as 'backbone.'
    check_init_checkpoints(
        with_init(model, checkpoint=str(ours), prefix='backbone'))
    assert [name for name, _, _ in pretrained_inits(model)] == ['backbone']
    # a URL is mmengine's to download
    check_init_checkpoints(with_init(model, checkpoint='https://x/y.pth'))

    with pytest.raises(InputError, match='checkpoint not found'):
        check_init_checkpoints(
            with_init(model, checkpoint=str(tmp_path / 'none.pth')))
    with pytest.raises(InputError) as error:
        check_init_checkpoints(with_init(model, checkpoint=str(ours)))
    assert f'checkpoint {ours} does not fit the backbone (its init_cfg' in \
        str(error.value)
    assert str(error.value).endswith(
        "its keys start with 'backbone.': set the init_cfg's "
        "prefix='backbone.'")
    with pytest.raises(InputError) as error:
        check_init_checkpoints(
            with_init(model, checkpoint=str(ours), prefix='encoder.'))
    assert str(error.value) == (
        f"checkpoint {ours} holds no tensors under the prefix 'encoder.' of "
        "the backbone's init_cfg; set the init_cfg's prefix to what its keys "
        "start with, or leave it out for the backbone's own state dict")

    # mmengine selects a prefix among the keys as they are in the file
    ddp = tmp_path / 'ddp.pth'
    torch.save({f'module.{k}': v for k, v in load_state_dict(ours).items()},
               ddp)
    check_init_checkpoints(with_init(model, checkpoint=str(ddp),
                                     prefix='module.backbone.'))
    with pytest.raises(InputError, match="under the prefix 'backbone.'"):
        check_init_checkpoints(
            with_init(model, checkpoint=str(ddp), prefix='backbone.'))

    # Wave-ViT's backbone has the names of their code: their file loads as
    # it is (their heads and filters are left out)
    theirs = tmp_path / 'theirs.pth'
    torch.save(authors_weights('wavevit'), theirs)
    check_init_checkpoints(with_init(model, checkpoint=str(theirs)))
    with pytest.raises(InputError) as error:
        check_init_checkpoints(
            with_init(model, checkpoint=str(theirs), prefix='backbone.'))
    assert str(error.value).endswith(
        "its keys are the backbone's own: leave the prefix out")


def test_an_init_checkpoint_of_the_wavemix_authors_is_named(
        reference_fixtures, tmp_path):
    fixture = reference_fixtures['segmentation'][3]
    theirs = tmp_path / 'theirs.pth'
    torch.save(fixture['state_dict'], theirs)
    for prefix in ('backbone.', None):
        model = build_segmentor(fixture['kwargs'])
        with pytest.raises(InputError) as error:
            check_init_checkpoints(
                with_init(model, checkpoint=str(theirs), prefix=prefix))
        assert str(error.value).endswith(
            "it holds weights in the names of the WaveMix authors' package "
            '(wavemix==0.2.4): convert it first, python '
            f'tools/convert_wavemix_weights.py {theirs} OUT')


def test_svt_imagenet_weights_initialise_a_backbone_for_512(tmp_path):
    """The ADE20K config's SVT is built for 512x512: ImageNet's 224x224
    low-pass filters are resized as they load, which the check lets be."""
    imagenet = tmp_path / 'svt_s_in1k.pth'
    torch.save({'state_dict': svt_convert(authors_weights('svt'))}, imagenet)
    model = with_init(model_of(SVT), checkpoint=str(imagenet),
                      prefix='backbone.')
    with logged_messages() as messages:
        check_init_checkpoints(model)
    assert 'resized block1.0.attn.complex_weight_ll from (56, 56) to ' \
        '(128, 128) (a model built for another img_size)' in messages


def test_an_init_checkpoint_of_another_model_stops_unless_asked(tmp_path):
    model = model_of(WAVEVIT)
    other = tmp_path / 'svt_s.pth'
    torch.save({'state_dict': svt_convert(authors_weights('svt'))}, other)
    with_init(model, checkpoint=str(other), prefix='backbone.')
    with pytest.raises(InputError) as error:
        check_init_checkpoints(model)
    assert 'tensors are missing (block1.0.attn.' in str(error.value)
    assert str(error.value).endswith(
        'it holds the weights of another model or size; to fine-tune from '
        'what fits, use --strict-load false')
    with logged_messages() as messages:
        check_init_checkpoints(model, strict=False)
    assert any('--strict-load false: loading' in m and
               "of the backbone (its init_cfg's checkpoint)" in m
               for m in messages)


def test_init_cfgs_of_modules_that_mmengine_initialises():
    """In a list too; not a module that reads its checkpoint its own way
    (mmseg's Swin converts the official weights under 'model')."""
    from mmengine.model import BaseModule
    from mmseg.models.backbones import SwinTransformer

    class Block(BaseModule):
        pass

    pretrained = dict(type='Pretrained', checkpoint='a.pth')
    model = nn.Sequential(
        Block(init_cfg=[dict(type='Kaiming'), pretrained]),
        SwinTransformer(embed_dims=8, depths=(1, ), num_heads=(1, ),
                        strides=(4, ), out_indices=(0, ),
                        init_cfg=dict(pretrained, checkpoint='swin.pth')))
    assert [(name, cfg['checkpoint'])
            for name, _, cfg in pretrained_inits(model)] == [('0', 'a.pth')]
