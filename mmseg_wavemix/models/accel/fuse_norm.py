# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Fold inference-mode BatchNorm into the convolution before it."""
import copy

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def fuse_conv_bn(conv: nn.Module, bn: _BatchNorm) -> nn.Module:
    """Return a copy of ``conv`` (``nn.Conv2d`` or ``nn.ConvTranspose2d``)
    that computes ``bn(conv(x))`` with ``bn`` in eval mode (running
    statistics).

    Args:
        conv (nn.Conv2d | nn.ConvTranspose2d): The convolution.
        bn (_BatchNorm): The norm layer applied to its output.

    Returns:
        nn.Module: The fused convolution (with a bias).
    """
    if not isinstance(conv, _CONVS):
        raise TypeError(f'expected nn.Conv2d or nn.ConvTranspose2d, got '
                        f'{type(conv).__name__}')
    if bn.running_var is None:
        raise ValueError('cannot fold a BatchNorm without running statistics '
                         '(track_running_stats=False) into a convolution')
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        fused = copy.deepcopy(conv)
        weight = fused.weight
        groups = fused.groups
        if isinstance(conv, nn.ConvTranspose2d):
            # (in, out / groups, kh, kw): output channels in dim 1, per group.
            shape = weight.shape
            weight.copy_((weight.view(groups, -1, *shape[1:]) *
                          scale.view(groups, 1, -1, 1, 1)).view(shape))
        else:
            weight.mul_(scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        fused.bias = nn.Parameter(bias.to(weight.dtype))
    return fused


def fuse_norm_layers(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a ``Conv2d`` or
    ``ConvTranspose2d`` (adjacent children of one module, e.g. the
    upsampling and norm of each WaveMix level MLP, or an mmcv ``ConvModule``
    that applies its conv first) into that convolution, in place, and put an
    ``nn.Identity`` where the norm was. For inference only: the result
    computes what the model computes in eval mode.

    Unlike mmcv's ``fuse_conv_bn`` it also folds into transposed
    convolutions and never folds across a layer in between (such as the
    activation before the norm of the patchify stem).

    Args:
        module (nn.Module): The model (modified in place).

    Returns:
        nn.Module: ``module``.
    """
    order = getattr(module, 'order', None)  # mmcv ConvModule: norm first?
    conv_first = not (isinstance(order, tuple) and 'norm' in order
                      and order.index('norm') < order.index('conv'))
    last_name = None
    for name, child in list(module.named_children()):
        if conv_first and last_name is not None and \
                isinstance(child, _BatchNorm) and \
                child.running_var is not None:
            module._modules[last_name] = fuse_conv_bn(
                module._modules[last_name], child)
            module._modules[name] = nn.Identity()
            last_name = None
        elif type(child) in _CONVS:  # not subclasses: e.g. weight-
            last_name = name  # standardized convs change their weights
        else:
            fuse_norm_layers(child)
            last_name = None
    return module
