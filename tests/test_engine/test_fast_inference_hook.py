# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.engine import FastInferenceHook
from mmseg_wavemix.models.accel import FusedConvGELU
from mmseg_wavemix.models.backbones import WaveletLevelMLP
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..conftest import REPO_ROOT

DEMO = osp.join(REPO_ROOT, 'configs', 'wavemix',
                'wavemix_16x2_l4_cityscapes-demo.py')


def demo_model(channels, num_classes):
    _, model = build_model_from_config(
        DEMO, {
            'model.decode_head.channels': channels,
            'model.decode_head.num_classes': num_classes
        })
    # trained-looking norms: folding must use the running statistics
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize('channels,num_classes,folds_classifier',
                         [(8, 3, True), (4, 19, False)])
def test_fast_model_computes_the_same_logits(channels, num_classes,
                                             folds_classifier):
    model = demo_model(channels, num_classes)
    inputs = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        expected = model(inputs, mode='tensor')
    FastInferenceHook().before_test(SimpleNamespace(model=model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # the classifier is folded only where it saves FLOPs
    assert isinstance(model.decode_head.conv_seg,
                      nn.Identity) == folds_classifier
    mlps = [m for m in model.modules() if isinstance(m, WaveletLevelMLP)]
    assert mlps and all(
        isinstance(m.fc1, FusedConvGELU) and isinstance(m.act, nn.Identity)
        for m in mlps)
    assert model.backbone.stem[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        logits = model(
            inputs.contiguous(memory_format=torch.channels_last),
            mode='tensor')
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # a second preparation (e.g. tools/test.py --fast on a prepared model)
    # finds nothing left to fold
    FastInferenceHook().before_test(SimpleNamespace(model=model))
    with torch.no_grad():
        again = model(inputs, mode='tensor')
    torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)


def test_options_turn_each_step_off():
    model = demo_model(8, 3)
    hook = FastInferenceHook(
        fuse_norm=False,
        fold_classifier=False,
        fuse_activation=False,
        channels_last=False)
    hook.before_test(SimpleNamespace(model=model))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, FusedConvGELU) for m in model.modules())
    assert isinstance(model.decode_head.conv_seg, nn.Conv2d)
    assert model.backbone.stem[0].weight.is_contiguous()
