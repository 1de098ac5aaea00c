# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList, Sequential
from mmseg.engine.optimizers.layer_decay_optimizer_constructor import \
    get_layer_id_for_convnext
from mmseg.registry import MODELS
from torch import Tensor

from ..utils import WTConv2d
from ..utils.arch import check_frozen_stages, check_out_indices, select_arch


class WTConvNeXtBlock(BaseModule):
    """ConvNeXt block whose 7x7 depthwise conv is a :class:`WTConv2d`.

    WTConv -> LayerNorm -> Linear (x ``mlp_ratio``) -> GELU -> Linear ->
    layer scale -> drop path, plus the shortcut.

    Args:
        in_channels (int): Channels C.
        kernel_size (int): WTConv kernel size. Default: 5.
        wt_levels (int): WTConv wavelet levels. Default: 2.
        norm_cfg (dict): Norm layer; it is called on channels-last tensors
            with ``data_format='channel_last'``, as ``LN2d``.
            Default: dict(type='LN2d', eps=1e-6).
        act_cfg (dict): Activation between the linear layers.
            Default: dict(type='GELU').
        mlp_ratio (float): Hidden channels are ``C * mlp_ratio``. Default: 4.
        drop_path_rate (float): Stochastic depth rate. Default: 0.
        layer_scale_init_value (float): Initial layer scale ``gamma``; 0
            disables it. Default: 1e-6.
        with_cp (bool): Gradient checkpointing. Default: False.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 in_channels: int,
                 kernel_size: int = 5,
                 wt_levels: int = 2,
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.depthwise_conv = WTConv2d(
            in_channels, kernel_size=kernel_size, wt_levels=wt_levels)
        self.norm = build_norm_layer(norm_cfg, in_channels)[1]
        mid_channels = int(mlp_ratio * in_channels)
        self.pointwise_conv1 = nn.Linear(in_channels, mid_channels)
        self.act = build_activation_layer(act_cfg)
        self.pointwise_conv2 = nn.Linear(mid_channels, in_channels)
        self.gamma = nn.Parameter(
            torch.full((in_channels, ), float(layer_scale_init_value))
        ) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(
            drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _inner_forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.depthwise_conv(x).permute(0, 2, 3, 1)  # to (N, H, W, C)
        x = self.norm(x, data_format='channel_last')
        x = self.pointwise_conv2(self.act(self.pointwise_conv1(x)))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


@MODELS.register_module()
class WTConvNeXt(BaseModule):
    """WTConvNeXt backbone (Finder et al., "Wavelet Convolutions for Large
    Receptive Fields", ECCV 2024): ConvNeXt with every 7x7 depthwise conv
    replaced by a 5x5 :class:`WTConv2d` whose wavelet levels shrink with the
    stage (5, 4, 3, 2), so that each stage sees about the same share of the
    image.

    Registered in mmseg (and in mmpretrain by ``import
    mmseg_wavemix.classification``). Module and parameter
    names follow mmpretrain's ``ConvNeXt`` (``downsample_layers``,
    ``stages.{i}.{j}``, ``norm{i}``, ``gamma``), so mmseg's
    ``LearningRateDecayOptimizerConstructor`` (layer-wise or stage-wise),
    mmpretrain's layer-decay constructor (:meth:`get_layer_depth`) and the
    authors' mmseg checkpoints work unchanged.

    Outputs of stage i have ``channels[i]`` channels at stride
    ``stem_patch_size * 2 ** i`` (4/8/16/32; sizes are floored, as in
    ConvNeXt): feature maps for decode heads; with
    ``gap_before_final_norm=True`` (classification, as mmpretrain's ConvNeXt)
    they are globally averaged to (N, C) before the output norm.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, or a dict with
            ``depths``, ``channels`` and ``wt_levels`` (four entries each).
            Default: 'tiny'.
        in_channels (int): Input image channels. Default: 3.
        stem_patch_size (int): Patch size (and stride) of the stem conv.
            Default: 4.
        kernel_size (int): WTConv kernel size. Default: 5.
        norm_cfg (dict): Norm layers. Default: dict(type='LN2d', eps=1e-6).
        act_cfg (dict): Activation of the blocks. Default: dict(type='GELU').
        mlp_ratio (float): Hidden channel ratio of the blocks. Default: 4.
        drop_path_rate (float): Stochastic depth rate, rising linearly over
            the blocks from 0. Default: 0.
        layer_scale_init_value (float): Initial layer scale; 0 disables it.
            Default: 1e-6.
        out_indices (Sequence[int] | int): Stages to output, negative indices
            count from the end. Default: -1.
        frozen_stages (int): Stages (with the downsampling before them) to
            freeze: 0 none, k the first k. Default: 0.
        gap_before_final_norm (bool): Average each output globally before its
            norm, for classification. Default: False (feature maps).
        with_cp (bool): Gradient checkpointing of each block. Default: False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Default: truncated normal (std 0.02) for conv and linear layers,
            ones for LayerNorm, as ConvNeXt.
    """
    arch_settings = {
        'tiny': dict(
            depths=[3, 3, 9, 3],
            channels=[96, 192, 384, 768],
            wt_levels=[5, 4, 3, 2]),
        'small': dict(
            depths=[3, 3, 27, 3],
            channels=[96, 192, 384, 768],
            wt_levels=[5, 4, 3, 2]),
        'base': dict(
            depths=[3, 3, 27, 3],
            channels=[128, 256, 512, 1024],
            wt_levels=[5, 4, 3, 2]),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 stem_patch_size: int = 4,
                 kernel_size: int = 5,
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 out_indices: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = 0,
                 gap_before_final_norm: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = [
                     dict(
                         type='TruncNormal',
                         layer=['Conv2d', 'Linear'],
                         std=.02,
                         bias=0.),
                     dict(
                         type='Constant', layer=['LayerNorm'], val=1.,
                         bias=0.),
                 ]):
        super().__init__(init_cfg=init_cfg)
        arch = select_arch(self.arch_settings, arch)
        self.depths = list(arch['depths'])
        self.channels = list(arch['channels'])
        self.wt_levels = list(arch['wt_levels'])
        num_stages = len(self.depths)
        check_frozen_stages(frozen_stages, num_stages, 'stage')
        self.in_channels = in_channels
        self.out_indices = tuple(
            sorted(check_out_indices(out_indices, num_stages, 'stage')))
        self.frozen_stages = frozen_stages
        self.gap_before_final_norm = gap_before_final_norm

        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.downsample_layers = ModuleList()
        self.stages = ModuleList()
        for i, (depth, channels, levels) in enumerate(
                zip(self.depths, self.channels, self.wt_levels)):
            if i == 0:
                downsample = nn.Sequential(
                    nn.Conv2d(
                        in_channels,
                        channels,
                        kernel_size=stem_patch_size,
                        stride=stem_patch_size),
                    build_norm_layer(norm_cfg, channels)[1])
            else:
                downsample = nn.Sequential(
                    build_norm_layer(norm_cfg, self.channels[i - 1])[1],
                    nn.Conv2d(
                        self.channels[i - 1], channels, kernel_size=2,
                        stride=2))
            self.downsample_layers.append(downsample)
            first_block = sum(self.depths[:i])
            self.stages.append(
                Sequential(*[
                    WTConvNeXtBlock(
                        channels,
                        kernel_size=kernel_size,
                        wt_levels=levels,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg,
                        mlp_ratio=mlp_ratio,
                        drop_path_rate=rates[first_block + j],
                        layer_scale_init_value=layer_scale_init_value,
                        with_cp=with_cp) for j in range(depth)
                ]))
            if i in self.out_indices:
                self.add_module(f'norm{i}',
                                build_norm_layer(norm_cfg, channels)[1])
        self._freeze_stages()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'WTConvNeXt expects images of shape (N, {self.in_channels}, '
                f'H, W), got {tuple(x.shape)}; set in_channels to match your '
                'data')
        outs = []
        for i, (downsample, stage) in enumerate(
                zip(self.downsample_layers, self.stages)):
            x = stage(downsample(x))
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    gap = x.mean((-2, -1), keepdim=True)
                    outs.append(norm(gap).flatten(1))
                else:
                    outs.append(norm(x))
        return tuple(outs)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'WTConvNeXt':
        super().train(mode)
        self._freeze_stages()
        return self

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """Layer depth of a parameter for mmpretrain's layer-wise learning
        rate decay (mmseg's constructor reads the names itself).

        Args:
            param_name (str): Parameter name, e.g.
                ``'backbone.stages.2.4.pointwise_conv1.weight'``.
            prefix (str): The backbone's prefix in ``param_name``.
                Default: ''.

        Returns:
            tuple[int, int]: The layer depth and the number of layers.
        """
        max_layer_id = 12 if self.depths[-2] > 9 else 6
        if not param_name.startswith(prefix):  # a head after the backbone
            return max_layer_id + 1, max_layer_id + 2
        name = 'backbone.' + param_name[len(prefix):]
        return get_layer_id_for_convnext(name, max_layer_id), max_layer_id + 2
