# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F
from mmseg.models.losses import CrossEntropyLoss

from mmseg_wavemix.models.losses import SoftmaxFocalLoss, softmax_focal_loss

from ...conftest import host_reads


def logits_and_labels(seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, classes, 6, 7, generator=g, requires_grad=True)
    target = torch.randint(0, classes, (2, 6, 7), generator=g)
    target[0, :2] = 255
    return pred, target


def test_gamma_zero_equals_cross_entropy():
    pred, target = logits_and_labels()
    loss = SoftmaxFocalLoss(gamma=0.)(pred, target)
    torch.testing.assert_close(loss,
                               F.cross_entropy(pred, target, ignore_index=255))
    mmseg_ce = CrossEntropyLoss(avg_non_ignore=True)(
        pred, target, ignore_index=255)
    torch.testing.assert_close(loss, mmseg_ce)


def test_focal_term_per_pixel():
    pred, target = logits_and_labels(1)
    loss = SoftmaxFocalLoss(gamma=2., reduction='none')(pred, target)
    valid = target != 255
    ce = F.cross_entropy(
        pred, target.clamp(max=3), reduction='none')
    pt = torch.exp(-ce)
    expected = ((1 - pt)**2 * ce)[valid]
    torch.testing.assert_close(loss[valid], expected)
    assert (loss[~valid] == 0).all()
    mean = SoftmaxFocalLoss(gamma=2.)(pred, target)
    torch.testing.assert_close(mean, expected.mean())
    # focusing down-weights easy pixels: smaller than cross-entropy
    assert mean < F.cross_entropy(pred, target, ignore_index=255)


def test_alpha_and_class_weight():
    pred, target = logits_and_labels(2)
    base = SoftmaxFocalLoss(reduction='none')(pred, target)
    weights = [0.5, 1., 2., 4.]
    weighted = SoftmaxFocalLoss(
        class_weight=weights, reduction='none')(pred, target)
    factor = torch.tensor(weights)[target.clamp(max=3)]
    torch.testing.assert_close(weighted, base * factor * (target != 255))
    torch.testing.assert_close(
        SoftmaxFocalLoss(alpha=0.25, reduction='sum')(pred, target),
        0.25 * base.sum())
    with pytest.raises(ValueError, match='alpha has 2 values'):
        SoftmaxFocalLoss(alpha=[1., 2.])(pred, target)


def test_ignore_index_override_and_gradients():
    pred, target = logits_and_labels(3)
    loss_fn = SoftmaxFocalLoss(ignore_index=255, loss_weight=2.)
    target_other = target.clone()
    target_other[target == 255] = 7
    # mmseg's decode head passes its ignore_index to the loss
    loss = loss_fn(pred, target_other, ignore_index=7)
    torch.testing.assert_close(loss, loss_fn(pred, target))
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_errors():
    pred, target = logits_and_labels()
    with pytest.raises(ValueError, match='label 9 is outside 0..3'):
        SoftmaxFocalLoss()(pred, torch.full_like(target, 9))
    with pytest.raises(ValueError, match='gamma'):
        SoftmaxFocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="loss_name must start with 'loss_'"):
        SoftmaxFocalLoss(loss_name='focal')
    assert SoftmaxFocalLoss(loss_name='loss_f').loss_name == 'loss_f'


def test_mean_divisor_edge_cases():
    """All pixels ignored: a zero loss (the divisor is clamped to 1, on the
    device); ``avg_factor`` replaces the count of valid pixels."""
    pred = torch.randn(1, 3, 2, 2)
    target = torch.full((1, 2, 2), 255)
    loss = SoftmaxFocalLoss(ignore_index=255)(pred, target)
    assert loss.item() == 0
    target = torch.randint(0, 3, (1, 2, 2))
    plain = SoftmaxFocalLoss(reduction='sum')(pred, target)
    for factor in (8., torch.tensor(8)):
        torch.testing.assert_close(
            SoftmaxFocalLoss()(pred, target, avg_factor=factor), plain / 8)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_gradients_are_autograds_keeping_only_the_logits(dtype,
                                                         channels_last):
    """The log-probability of the true class keeps the logits and labels
    for backward, not the float32 log-probabilities of every class, and
    gives autograd's gradients (in the logits' dtype and layout)."""
    pred, target = logits_and_labels(4, classes=5)
    pred = pred.detach().to(dtype)
    if channels_last:  # classes fastest: the softmax over the last dim
        pred = pred.contiguous(memory_format=torch.channels_last)
    pred.requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: kept.append(t) or t, lambda t: t):
        loss = SoftmaxFocalLoss(gamma=2.)(pred, target)
    grad, = torch.autograd.grad(loss, pred)
    # of the logits' size only the logits themselves
    assert [t.data_ptr() for t in kept if t.shape == pred.shape] == \
        [pred.data_ptr()]
    # the same loss through autograd's log_softmax and gather
    exact = pred.detach().double().requires_grad_()
    valid = target != 255
    log_pt = F.log_softmax(exact, 1).gather(
        1, target.clamp(max=4).unsqueeze(1)).squeeze(1)
    expected_loss = (-log_pt * (1 - log_pt.exp())**2)[valid].mean()
    expected, = torch.autograd.grad(expected_loss, exact)
    assert grad.dtype == dtype
    assert grad.is_contiguous(memory_format=torch.channels_last
                              if channels_last else torch.contiguous_format)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else \
        dict(rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(loss.double(), expected_loss, **tol)
    torch.testing.assert_close(grad.double(), expected, **tol)


def test_labels_checked_at_once_on_cpu():
    pred, target = logits_and_labels()
    assert not softmax_focal_loss.labels_checked_after_backward(pred)
    with host_reads() as reads:
        SoftmaxFocalLoss()(pred, target)
    assert reads == ['_local_scalar_dense']


@pytest.mark.parametrize('bad', [False, True])
def test_labels_checked_after_backward(monkeypatch, bad):
    # as on a GPU in training: the forward pass reads nothing on the host
    # and the backward pass reports a bad label at its end
    pred, target = logits_and_labels(5)
    expected = SoftmaxFocalLoss()(pred, target)
    expected.backward()
    expected_grad, pred.grad = pred.grad, None
    if bad:
        target[1, 3, 2] = 9
    monkeypatch.setattr(softmax_focal_loss, 'labels_checked_after_backward',
                        lambda pred: True)
    with host_reads() as reads:
        loss = SoftmaxFocalLoss()(pred, target)
    assert reads == []
    if not bad:
        loss.backward()
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(pred.grad, expected_grad)
        return
    assert torch.isfinite(loss)  # the bad pixel gathers class 0 meanwhile
    with pytest.raises(ValueError, match='label 9 is outside 0..3'):
        loss.backward()
