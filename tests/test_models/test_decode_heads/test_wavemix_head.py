# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import copy

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel import fold_head_classifier
from mmseg_wavemix.models.decode_heads import WaveMixHead


def test_paper_head():
    head = WaveMixHead(in_channels=32, channels=8, num_classes=5,
                       dropout_ratio=0.)
    out = head([torch.randn(2, 32, 8, 12)])
    assert out.shape == (2, 5, 32, 48)
    deconvs = [m for m in head.modules() if isinstance(m, nn.ConvTranspose2d)]
    channels = [(d.in_channels, d.out_channels) for d in deconvs]
    assert channels == [(32, 16), (16, 8)]
    assert all(d.bias is not None for d in deconvs)
    # no norm or activation unless configured, as in the paper
    assert not any(
        isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in head.modules())
    assert head.dropout is None


def test_configurable_norm_act_and_depth():
    head = WaveMixHead(
        in_channels=32, channels=8, num_classes=3, num_upsamples=3,
        norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    out = head([torch.randn(1, 32, 4, 4)])
    assert out.shape == (1, 3, 32, 32)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.modules()) == 3


@pytest.mark.parametrize('num_upsamples', [1, 2])
def test_fold_head_classifier(num_upsamples):
    head = WaveMixHead(in_channels=32, channels=8, num_classes=5,
                       num_upsamples=num_upsamples, dropout_ratio=0.)
    head = head.double().eval()
    inputs = [torch.randn(2, 32, 6, 10, dtype=torch.float64)]
    head.fold_classifier = False  # the layers one after the other
    expected = head(inputs)
    head.fold_classifier = True
    folded = fold_head_classifier(head)
    assert folded is head and isinstance(head.conv_seg, nn.Identity)
    last = head.upsamples[-1].conv
    assert isinstance(last, nn.ConvTranspose2d)
    assert not last.training  # in the mode of the layer it replaces
    assert (last.in_channels, last.out_channels) == (32 // 2**(
        num_upsamples - 1), 5)
    torch.testing.assert_close(head(inputs), expected)
    # folded for good: nothing left to fold
    assert not head.can_fold_classifier and not head.fold_classifier
    with pytest.raises(ValueError, match='folded already'):
        fold_head_classifier(head)


def test_fold_classifier_trains_like_separate_layers():
    torch.manual_seed(0)
    head = WaveMixHead(in_channels=16, channels=8, num_classes=3,
                       dropout_ratio=0.).double().train()
    assert head.fold_classifier
    calls = []
    for layer in (head.upsamples[-1], head.conv_seg):
        layer.register_forward_hook(lambda *args: calls.append(args[0]))

    def run(fold):
        head.fold_classifier = fold
        head.zero_grad()
        x = torch.randn(2, 16, 5, 7, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
        out = head([x])
        out.backward(torch.cos(out))  # any upstream gradient
        grads = {n: p.grad.clone() for n, p in head.named_parameters()}
        return out, x.grad, grads

    out, x_grad, grads = run(fold=True)
    assert calls == []  # neither layer ran on its own
    ref_out, ref_x_grad, ref_grads = run(fold=False)
    assert len(calls) == 2
    assert out.shape == (2, 3, 20, 28)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(x_grad, ref_x_grad)
    assert grads.keys() == ref_grads.keys() and len(grads) == 6
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


@pytest.mark.parametrize('kwargs', [
    dict(num_classes=8),  # as many classes as channels: no FLOPs saved
    dict(num_classes=3, dropout_ratio=0.1),
    dict(num_classes=3, act_cfg=dict(type='ReLU')),
    dict(num_classes=3, fold_classifier=False),
])
def test_fold_classifier_only_where_it_applies(kwargs):
    kwargs.setdefault('dropout_ratio', 0.)
    head = WaveMixHead(in_channels=16, channels=8, **kwargs)
    assert not head.fold_classifier
    calls = []
    head.conv_seg.register_forward_hook(lambda *args: calls.append(1))
    assert head([torch.randn(1, 16, 3, 3)]).shape[-2:] == (12, 12)
    assert calls == [1]


def test_fold_head_classifier_refuses_nonlinear_heads():
    for kwargs in (dict(act_cfg=dict(type='ReLU')), dict(
            norm_cfg=dict(type='BN')), dict(dropout_ratio=0.1)):
        head = WaveMixHead(in_channels=8, channels=4, num_classes=2, **kwargs)
        assert not head.can_fold_classifier
        with pytest.raises(ValueError, match='dropout_ratio=0'):
            fold_head_classifier(head)
        assert isinstance(head.conv_seg, nn.Conv2d)  # unchanged


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
@pytest.mark.parametrize('num_upsamples', [2, 3])
@pytest.mark.parametrize('padded', [False, True])
def test_memory_efficient_head_keeps_its_input_only(num_upsamples, dtype,
                                                    padded, monkeypatch):
    """Under autocast the memory-efficient head keeps the input of its
    recomputed upsamplings, not the last one's input, and gives the plain
    head's output and gradients (float64, which autocast leaves as it is;
    bf16: as close to float64 as the plain head's own); so with its 3
    classes computed as 8 (chosen where cuDNN runs that faster, see
    accel.padded_classes)."""
    if padded:
        from mmseg_wavemix.models.accel import memory_efficient
        monkeypatch.setattr(memory_efficient, 'padded_channels',
                            lambda x, weight, conv: 8)
    torch.manual_seed(0)
    plain = WaveMixHead(in_channels=32, channels=8, num_classes=3,
                        num_upsamples=num_upsamples,
                        dropout_ratio=0.).double().train()
    ours = WaveMixHead(in_channels=32, channels=8, num_classes=3,
                       num_upsamples=num_upsamples, dropout_ratio=0.,
                       memory_efficient=True).double().train()
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    autocast = dtype == torch.bfloat16
    exact_head = copy.deepcopy(plain)
    if autocast:  # float32 layers under autocast, as in training
        plain.float()
        ours.float()

    def run(head, autocast):
        inputs = x.clone().to(next(head.parameters()).dtype).requires_grad_()
        kept = {}
        head.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: kept.setdefault(t.untyped_storage().data_ptr(),
                                          t.untyped_storage().nbytes()) and t,
                lambda t: t), torch.autocast('cpu', dtype=torch.bfloat16,
                                             enabled=autocast is not None):
            out = head([inputs])
        out.double().backward(torch.cos(out.double()))
        grads = [inputs.grad] + [p.grad.clone() for p in head.parameters()]
        return sum(kept.values()), out, grads

    ours_kept, out, grads = run(ours, True)
    plain_kept, _, plain_grads = run(plain, True)
    _, expected, exact = run(exact_head, None)
    # without autocast (float32 training) it keeps what the layers keep
    assert run(ours, None)[0] == run(plain, None)[0]
    scale = 2**(num_upsamples - 1)  # the last upsampling's input
    features = 2 * (32 // scale) * 5 * scale * 7 * scale * dtype.itemsize
    assert ours_kept <= plain_kept - features
    assert out.dtype == dtype
    for a, b, c in zip(grads, plain_grads, exact):
        error, plain_error = ((t.double() - c).abs().max() for t in (a, b))
        assert error <= 1.5 * plain_error + 1e-12 * c.abs().max()


def test_memory_efficient_head_without_folding_runs_the_layers():
    head = WaveMixHead(in_channels=16, channels=8, num_classes=3,
                       dropout_ratio=0.1, memory_efficient=True)
    assert not head.fold_classifier
    calls = []
    head.conv_seg.register_forward_hook(lambda *args: calls.append(1))
    head([torch.randn(1, 16, 3, 3)]).sum().backward()
    assert calls == [1]


def test_bad_num_upsamples():
    with pytest.raises(ValueError, match='num_upsamples'):
        WaveMixHead(in_channels=8, channels=2, num_classes=2, num_upsamples=0)


@pytest.mark.parametrize('size', [(32, 48), (16, 24)])
def test_loss_by_feat_gives_mmsegs_losses_and_accuracy(size):
    """The head's own loss_by_feat (no same-size resize, argmax accuracy)
    equals mmseg's BaseDecodeHead.loss_by_feat, with ignored pixels and
    with logits smaller than the labels."""
    from mmengine.structures import PixelData
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    head = WaveMixHead(
        in_channels=16, channels=4, num_classes=5, dropout_ratio=0,
        loss_decode=[
            dict(type='CrossEntropyLoss', loss_weight=1.0),
            dict(type='CrossEntropyLoss', loss_weight=0.5)
        ])
    labels = torch.randint(0, 5, (2, 1, 32, 48))
    labels[:, :, :4] = 255  # ignored
    samples = [
        SegDataSample(gt_sem_seg=PixelData(data=label)) for label in labels
    ]
    logits = torch.randn(2, 5, *size, requires_grad=True)
    ours = head.loss_by_feat(logits, samples)
    mmseg = BaseDecodeHead.loss_by_feat(head, logits, samples)
    assert ours.keys() == mmseg.keys()
    for key in mmseg:
        torch.testing.assert_close(ours[key], mmseg[key])
    assert ours['acc_seg'].shape == (1, ) and 5 < ours['acc_seg'].item() < 95
