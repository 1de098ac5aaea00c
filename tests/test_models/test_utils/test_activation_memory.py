# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import revert_sync_batchnorm

from mmseg_wavemix.models.utils import WaveMixBlock
from mmseg_wavemix.models.utils.activation_memory import (batch_norm_add,
                                                          conv_gelu_conv2d)


def saved_bytes(fn):
    """Bytes autograd keeps for backward while ``fn`` runs (each storage
    once), and fn's result."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def grads(fn, tensors, weight):
    return torch.autograd.grad((fn() * weight).sum(), tensors)


def trained_bn(channels, momentum=0.1):
    norm = nn.BatchNorm2d(channels, momentum=momentum)
    norm.weight.data.uniform_(0.5, 2).mul_(torch.randn(channels).sign())
    norm.bias.data.uniform_(-1, 1)
    return norm


def test_conv_gelu_conv2d_gradients_and_memory():
    conv1, conv2 = nn.Conv2d(6, 12, 1), nn.Conv2d(12, 5, 3, padding=1)
    x = torch.randn(2, 6, 9, 7, requires_grad=True)
    weight = torch.randn(2, 5, 9, 7)
    params = [x, *conv1.parameters(), *conv2.parameters()]
    plain_bytes, expected = saved_bytes(lambda: conv2(F.gelu(conv1(x))))
    ours_bytes, out = saved_bytes(lambda: conv_gelu_conv2d(x, conv1, conv2))
    torch.testing.assert_close(out, expected)
    assert type(out.grad_fn).__name__ == '_ConvGELUConvFunctionBackward'
    # only x and the parameters, not conv1(x) and its GELU
    weights = sum(p.numel() * 4
                  for p in (conv1.weight, conv1.bias, conv2.weight))
    assert ours_bytes == x.numel() * 4 + weights < plain_bytes
    ours = grads(lambda: conv_gelu_conv2d(x, conv1, conv2), params, weight)
    plain = grads(lambda: conv2(F.gelu(conv1(x))), params, weight)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_conv_gelu_conv2d_under_bf16_autocast():
    conv1, conv2 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = conv_gelu_conv2d(x, conv1, conv2)
        expected = conv2(F.gelu(conv1(x)))
    assert out.dtype == expected.dtype == torch.bfloat16
    ours = torch.autograd.grad(out.float().sum(), [x, conv1.weight])
    plain = torch.autograd.grad(expected.float().sum(), [x, conv1.weight])
    for a, b in zip(ours, plain):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('reverted_sync_bn', [False, True])
def test_batch_norm_add_gradients_statistics_and_memory(
        momentum, reverted_sync_bn):
    norm = trained_bn(4, momentum)
    if reverted_sync_bn:  # what mmengine's runner makes of SyncBN
        norm = revert_sync_batchnorm(nn.SyncBatchNorm.convert_sync_batchnorm(
            nn.Sequential(norm)))[0]
        assert type(norm).__name__ == '_BatchNormXd'
    reference = copy.deepcopy(norm)
    z = torch.randn(3, 4, 5, 6, requires_grad=True)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    weight = torch.randn(3, 4, 5, 6)
    expected = reference(z) + x
    ours_bytes, out = saved_bytes(lambda: batch_norm_add(z, norm, x))
    torch.testing.assert_close(out, expected)
    assert type(out.grad_fn).__name__ == '_BatchNormAddFunctionBackward'
    # the output and x, which the next layers keep anyway, instead of z
    # (and per-channel vectors)
    assert ours_bytes < 2 * z.numel() * 4 + 256
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        torch.testing.assert_close(
            getattr(norm, name), getattr(reference, name))
    params = [z, x, norm.weight, norm.bias]
    ours = grads(lambda: batch_norm_add(z, norm, x), params, weight)
    plain = grads(lambda: reference(z) + x,
                  [z, x, reference.weight, reference.bias], weight)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('case', ['tiny_weight', 'eval', 'float64', 'other'])
def test_batch_norm_add_falls_back(case):
    norm = trained_bn(4)
    z, x = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    if case == 'tiny_weight':
        norm.weight.data[1] = 1e-5
    elif case == 'eval':
        norm.eval()
    elif case == 'float64':
        norm, z, x = norm.double(), z.double(), x.double()
    else:  # a BatchNorm with a forward of its own, e.g. SyncBatchNorm
        norm = type('OtherBN', (nn.BatchNorm2d, ),
                    dict(forward=lambda self, t: F.batch_norm(
                        t, None, None, self.weight, self.bias, True)))(4)
    z.requires_grad_()
    expected = copy.deepcopy(norm)(z) + x
    out = batch_norm_add(z, norm, x)
    assert type(out.grad_fn).__name__ != '_BatchNormAddFunctionBackward'
    torch.testing.assert_close(out, expected)


def test_block_keeps_less_for_backward_and_computes_the_same():
    block = WaveMixBlock(32, level=3)
    for norm in block.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.weight.data.uniform_(0.5, 2)
    plain = copy.deepcopy(block)
    for mlp in plain.mlps:
        mlp.memory_efficient = False
    x = torch.randn(2, 32, 32, 32)
    ours_x, plain_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours_bytes, out = saved_bytes(lambda: block(ours_x))
    plain_bytes, expected = saved_bytes(lambda: plain(plain_x))
    torch.testing.assert_close(out, expected)
    # the block's output is kept by the next layer anyway
    assert ours_bytes - out.numel() * 4 < 0.6 * plain_bytes
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (expected * weight).sum().backward()
    torch.testing.assert_close(ours_x.grad, plain_x.grad, rtol=1e-4,
                               atol=1e-4)
    for (name, ours), ref in zip(block.named_parameters(),
                                 plain.parameters()):
        if name.endswith('upsample.bias'):
            # a BatchNorm in training follows: the true gradient is 0, both
            # are float noise around it
            assert ours.grad.abs().max() < 1e-2 > ref.grad.abs().max()
        else:
            torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-3,
                                       atol=1e-4)
