# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from mmseg_wavemix.models.backbones import WTConvNeXt
from mmseg_wavemix.models.utils import WTConv2d

TINY_ARCH = dict(
    depths=[1, 1, 2, 1], channels=[8, 16, 32, 64], wt_levels=[3, 2, 2, 1])


def test_four_outputs_at_strides_4_8_16_32():
    """Feature maps by default, as an mmseg decode head needs them."""
    model = WTConvNeXt(TINY_ARCH, out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 24), (2, 16, 8, 12),
                                              (2, 32, 4, 6), (2, 64, 2, 3)]


def test_default_output_is_the_last_stage_and_pooled_for_classification():
    model = WTConvNeXt(TINY_ARCH)
    outs = model(torch.randn(2, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape == (2, 64, 2, 2)
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm3')
    pooled = WTConvNeXt(TINY_ARCH, gap_before_final_norm=True)
    assert pooled(torch.randn(2, 3, 64, 64))[0].shape == (2, 64)


def test_odd_input_sizes():
    model = WTConvNeXt(
        TINY_ARCH, out_indices=(0, 3), gap_before_final_norm=False).eval()
    outs = model(torch.randn(1, 3, 100, 70))
    assert outs[0].shape == (1, 8, 25, 17) and outs[1].shape == (1, 64, 3, 2)
    assert all(torch.isfinite(o).all() for o in outs)


def test_tiny_arch_uses_wtconv_with_levels_5_4_3_2():
    model = WTConvNeXt('tiny')
    for stage, levels, channels, depth in zip(model.stages, [5, 4, 3, 2],
                                              [96, 192, 384, 768],
                                              [3, 3, 9, 3]):
        assert len(stage) == depth
        for block in stage:
            assert isinstance(block.depthwise_conv, WTConv2d)
            assert block.depthwise_conv.wt_levels == levels
            assert block.depthwise_conv.kernel_size == 5
            assert block.pointwise_conv1.in_features == channels


@pytest.mark.parametrize('arch,depths,channels',
                         [('small', [3, 3, 27, 3], [96, 192, 384, 768]),
                          ('base', [3, 3, 27, 3], [128, 256, 512, 1024])])
def test_other_archs(arch, depths, channels):
    model = WTConvNeXt(arch)
    assert [len(s) for s in model.stages] == depths
    assert [s[0].pointwise_conv2.out_features
            for s in model.stages] == channels


def test_imagenet_classifier_has_about_30m_parameters():
    """The authors report 30M for WTConvNeXt-T (ImageNet head included)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mmseg_wavemix.classification  # noqa: F401  (registers it there)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type='WTConvNeXt', arch='tiny',
                    gap_before_final_norm=True),
                head=dict(
                    type='LinearClsHead', num_classes=1000,
                    in_channels=768)))
    params = sum(p.numel() for p in classifier.parameters())
    assert abs(params - 30e6) <= 0.5e6, params
    classifier.eval()
    with torch.no_grad():
        logits = classifier(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 1000)


def test_with_cp_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    plain = WTConvNeXt(TINY_ARCH, layer_scale_init_value=1.0)
    checkpointed = WTConvNeXt(
        TINY_ARCH, layer_scale_init_value=1.0, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, checkpointed):
        model(x)[0].square().sum().backward()
        grads.append(model.stages[0][0].depthwise_conv.wavelet_convs[2]
                     .weight.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_drop_path_is_random_in_training_only():
    model = WTConvNeXt(TINY_ARCH, drop_path_rate=0.5)
    assert isinstance(model.stages[0][0].drop_path, nn.Identity)  # rate 0
    assert model.stages[3][0].drop_path.drop_prob == pytest.approx(0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(x)[0])
        model.train()
        torch.manual_seed(0)
        first = model(x)[0]
        torch.manual_seed(1)
        assert not torch.allclose(first, model(x)[0])


def test_frozen_stages():
    model = WTConvNeXt(TINY_ARCH, frozen_stages=2)
    model.train()
    for i in range(4):
        params = [
            *model.downsample_layers[i].parameters(),
            *model.stages[i].parameters()
        ]
        assert all(p.requires_grad == (i >= 2) for p in params), i
        assert model.stages[i].training == (i >= 2)


class _Segmentor(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = WTConvNeXt(TINY_ARCH, out_indices=(0, 1, 2, 3))
        self.decode_head = nn.Conv2d(64, 2, 1)


@pytest.mark.parametrize('decay_type', ['stage_wise', 'layer_wise'])
def test_mmseg_layer_decay_optimizer_constructor(decay_type):
    """mmseg's constructor finds its ConvNeXt names in the backbone."""
    import mmseg.engine  # noqa: F401  (registers the constructor)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(
            _Segmentor(),
            dict(
                optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
                paramwise_cfg=dict(
                    decay_rate=0.9, decay_type=decay_type, num_layers=6),
                constructor='LearningRateDecayOptimizerConstructor'))
    scales = {
        name: group['lr_scale']
        for group in wrapper.optimizer.param_groups
        for name in group['param_names']
    }
    stem = scales['backbone.downsample_layers.0.0.weight']
    first = scales['backbone.stages.0.0.depthwise_conv.wavelet_convs.0.weight']
    last = scales['backbone.stages.3.0.pointwise_conv1.weight']
    head = scales['decode_head.weight']
    assert stem < first < last < head == 1
    assert scales['backbone.stages.0.0.gamma'] == first


def test_get_layer_depth_for_mmpretrain():
    model = WTConvNeXt('tiny')
    assert model.get_layer_depth('backbone.downsample_layers.0.0.weight',
                                 'backbone.') == (0, 8)
    assert model.get_layer_depth('backbone.stages.2.7.gamma',
                                 'backbone.') == (5, 8)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (7, 8)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match='arch must be one of'):
        WTConvNeXt('huge')
    with pytest.raises(ValueError, match='wt_levels'):
        WTConvNeXt(dict(depths=[1, 1], channels=[8, 16]))
    with pytest.raises(ValueError, match='out_indices'):
        WTConvNeXt(TINY_ARCH, out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        WTConvNeXt(TINY_ARCH, frozen_stages=5)
    with pytest.raises(ValueError, match=r'\(N, 3, H, W\)'):
        WTConvNeXt(TINY_ARCH)(torch.randn(1, 1, 32, 32))
