# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The inference fast paths on the trained demo model (weights from
tests/data/make_trained_demo_fixture.py, images from the demo generator):
channels_last memory, BatchNorm folded into the transposed convolutions, the
classifier folded into the head's last transposed convolution and GELU fused
into the convolution before it compute the same logits in fp32; bf16
autocast on CPU agrees with fp32 on the argmax of >= 99.5% of the pixels,
also where the CPU has no bf16 convolutions (AVX2 only)."""
import copy
import glob
import os.path as osp

import mmcv
import pytest
import torch

from mmseg_wavemix.models.accel import (FusedConvGELU, fold_head_classifier,
                                        fuse_conv_gelu, fuse_norm_layers)
from mmseg_wavemix.models.accel import fused_conv_gelu as fused_module
from mmseg_wavemix.models.accel import prepare_for_inference
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..conftest import DATA_DIR, REPO_ROOT
from ..test_tools.demo_data import run_tool

MIN_ARGMAX_AGREEMENT = 0.995


@pytest.fixture(scope='module')
def trained_demo():
    fixture = torch.load(
        osp.join(DATA_DIR, 'wavemix_demo_trained.pth'), weights_only=True)
    _, model = build_model_from_config(
        osp.join(REPO_ROOT, fixture['config']))
    model.load_state_dict(fixture['state_dict'])
    return model.eval()


@pytest.fixture(scope='module')
def demo_inputs(trained_demo, tmp_path_factory):
    """Two generated 1024x2048 demo images, normalised as in the config."""
    root = tmp_path_factory.mktemp('demo')
    run_tool('dataset_converters/make_demo_cityscapes.py', root,
             '--num-train', 1, '--num-val', 2)
    paths = sorted(glob.glob(str(root / 'leftImg8bit' / 'val' / '*' /
                             '*.png')))
    images = [
        torch.from_numpy(mmcv.imread(p)).permute(2, 0, 1) for p in paths
    ]
    return trained_demo.data_preprocessor(dict(inputs=images))['inputs']


@pytest.fixture(scope='module')
def fp32_logits(trained_demo, demo_inputs):
    """The plain model's fp32 logits of ``demo_inputs``, which each test
    compares with: computed once."""
    return logits(trained_demo, demo_inputs)


def logits(model, inputs, dtype=None):
    with torch.no_grad(), torch.autocast(
            'cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model(inputs, mode='tensor').float()


def fast(model):
    """The fast inference model: folded norms and classifier (also where it
    saves no FLOPs, to test it), GELU fused into fc1, channels_last."""
    model = fuse_conv_gelu(fuse_norm_layers(copy.deepcopy(model)))
    fold_head_classifier(model.decode_head)
    return model.to(memory_format=torch.channels_last)


def test_fixture_model_is_trained(fp32_logits):
    """A trained model is confident: most pixels have a clear top class."""
    probs = fp32_logits.softmax(dim=1)
    top2 = probs.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).median() > 0.2


def test_channels_last_and_folded_layers_give_the_same_logits(
        trained_demo, demo_inputs, fp32_logits):
    channels_last = demo_inputs.contiguous(memory_format=torch.channels_last)
    model = fast(trained_demo)
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    head = model.decode_head
    assert isinstance(head.conv_seg, torch.nn.Identity)
    assert head.upsamples[-1].conv.out_channels == head.num_classes
    torch.testing.assert_close(
        logits(model, channels_last), fp32_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('fast_path', ['plain', 'fast', 'fast_avx2'])
def test_bf16_argmax_agrees_with_fp32(trained_demo, demo_inputs, fp32_logits,
                                      fast_path, monkeypatch):
    expected = fp32_logits.argmax(dim=1)
    model, inputs = trained_demo, demo_inputs
    if fast_path == 'fast':
        model = fast(trained_demo)
    elif fast_path == 'fast_avx2':
        # a CPU whose oneDNN has no bf16 convolutions: the GELU is fused in
        # fp32 only and bf16 runs the plain layers (no crash)
        monkeypatch.setattr(fused_module, 'cpu_has_bf16_convolution',
                            lambda: False)
        model = prepare_for_inference(copy.deepcopy(trained_demo))
        fused = [m for m in model.modules() if isinstance(m, FusedConvGELU)]
        assert fused and all(m.dtypes == {torch.float32} for m in fused)
    if model is not trained_demo:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    bf16 = logits(model, inputs, torch.bfloat16)
    agreement = (bf16.argmax(dim=1) == expected).float().mean().item()
    assert agreement >= MIN_ARGMAX_AGREEMENT, agreement
