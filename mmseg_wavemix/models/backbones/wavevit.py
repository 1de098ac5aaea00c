# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Wave-ViT (Yao et al., "Wave-ViT: Unifying Wavelet and Transformers for
Visual Representation Learning", ECCV 2022): blocks and backbone.

Module and parameter names are the authors' (``patch_embed{i}``,
``block{i}.{j}``, ``norm{i}``), without their fixed wavelet filter buffers:
the Haar transform is this package's (:mod:`mmseg_wavemix.ops`), with the
authors' band-major channel layout ``[LL, LH, HL, HH]``.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList
from mmseg.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_wavemix.ops import haar_dwt, haar_idwt

from ..utils.arch import check_frozen_stages, check_out_indices, select_arch


def _tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class WaveAttention(BaseModule):
    """Attention whose keys and values come from the wavelet bands of the
    input (stages 1-2): 1x1 reduction to C/4 channels, a Haar DWT to C
    channels at half resolution, a 3x3 filter, then keys/values from a
    strided ``sr_ratio`` convolution of the filtered bands; the inverse DWT
    of the filtered bands joins the attention output before the projection.

    Args:
        dim (int): Channels C, divisible by 4 and by ``num_heads``.
        num_heads (int): Attention heads.
        sr_ratio (int): Spatial reduction of the keys and values.
        norm_cfg (dict): Norm of the reduction and the filter.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int,
                 norm_cfg: dict):
        super().__init__()
        self.num_heads = num_heads
        self.reduce = nn.Sequential(
            nn.Conv2d(dim, dim // 4, 1),
            build_norm_layer(norm_cfg, dim // 4)[1], nn.ReLU(inplace=True))
        self.filter = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1),
            build_norm_layer(norm_cfg, dim)[1], nn.ReLU(inplace=True))
        self.kv_embed = nn.Conv2d(
            dim, dim, sr_ratio, stride=sr_ratio) if sr_ratio > 1 \
            else nn.Identity()
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 2))
        self.proj = nn.Linear(dim + dim // 4, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        n, length, dim = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(n, length, heads, -1).transpose(1, 2)
        reduced = self.reduce(_tokens_to_map(x, h, w))
        ll, highs = haar_dwt(reduced)  # odd sizes: zero-padded
        bands = self.filter(
            torch.cat([ll, highs.transpose(1, 2).flatten(1, 2)], dim=1))
        c = ll.shape[1]
        details = bands[:, c:].unflatten(1, (3, c)).transpose(1, 2)
        inverse = haar_idwt(bands[:, :c], details, output_size=(h, w))
        kv = self.kv(self.kv_embed(bands).flatten(2).transpose(1, 2))
        k, v = kv.reshape(n, -1, 2, heads, dim // heads).permute(
            2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, length, dim)
        return self.proj(torch.cat([out, inverse.flatten(2).transpose(1, 2)],
                                   dim=-1))


class Attention(BaseModule):
    """Multi-head self-attention (stages 3-4).

    Args:
        dim (int): Channels, divisible by ``num_heads``.
        num_heads (int): Attention heads.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        n, length, dim = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(n, length, heads, -1).transpose(1, 2)
        k, v = self.kv(x).reshape(n, length, 2, heads, -1).permute(
            2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class DWConv(nn.Module):
    """3x3 depthwise convolution of tokens laid out as an h x w map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class FFN(BaseModule):
    """Linear, 3x3 depthwise conv, GELU, linear (PVTv2's FFN)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class WaveViTBlock(BaseModule):
    """Pre-norm transformer block: a token mixer (wavelet attention, plain
    attention, or SVT's scattering layer), then the FFN, each with a
    residual and drop path.

    Args:
        dim (int): Channels.
        attn (nn.Module): The token mixer, called as ``attn(x, h, w)`` on
            (N, h * w, dim) tokens.
        mlp_ratio (float): FFN hidden channels are ``dim * mlp_ratio``.
        drop_path_rate (float): Stochastic depth rate. Default: 0.
        with_cp (bool): Gradient checkpointing. Default: False.
    """

    def __init__(self,
                 dim: int,
                 attn: nn.Module,
                 mlp_ratio: float,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path_rate) \
            if drop_path_rate > 0 else nn.Identity()

    def _inner_forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, h, w,
                                 use_reentrant=False)
        return self._inner_forward(x, h, w)


class Stem(BaseModule):
    """7x7/2 conv and two 3x3 convs (each with BN and ReLU), then a 3x3/2
    projection to tokens and a LayerNorm: stride 4."""

    def __init__(self, in_channels: int, hidden_dim: int, out_channels: int,
                 norm_cfg: dict):
        super().__init__()
        layers = []
        for i, kernel in enumerate((7, 3, 3)):
            layers += [
                nn.Conv2d(in_channels if i == 0 else hidden_dim, hidden_dim,
                          kernel, stride=2 if i == 0 else 1,
                          padding=kernel // 2, bias=False),
                build_norm_layer(norm_cfg, hidden_dim)[1],
                nn.ReLU(inplace=True)
            ]
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Conv2d(hidden_dim, out_channels, 3, stride=2,
                              padding=1)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        x = self.proj(self.conv(x))
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class DownSamples(BaseModule):
    """3x3/2 conv between stages, then a LayerNorm of the tokens."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, stride=2,
                              padding=1)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


@MODELS.register_module()
class WaveViT(BaseModule):
    """Wave-ViT backbone: four stages of transformer blocks at strides
    4/8/16/32, wavelet attention in the first two.

    Each stage output is normalised by its stage's LayerNorm (``norm{i}``)
    and returned as an (N, C, H, W) map, as the authors' segmentation
    backbone; stages 1-3 also pass their normalised output on, as in the
    authors' model. Any input size works (odd sizes are zero-padded inside
    the wavelet transform and cropped back).

    Args:
        arch (str | dict): ``'s'``, ``'b'``, ``'l'`` (the paper's variants,
            :attr:`arch_settings`) or a dict of the same keys.
            Default: 's'.
        in_channels (int): Input channels. Default: 3.
        out_indices (Sequence[int] | int): Stages to output.
            Default: (0, 1, 2, 3).
        final_norm (bool): Normalise the last stage's output with its
            ``norm4``. The authors' classifier normalises after its
            class-attention block instead: its backbone has no ``norm4``
            (:class:`WaveViTClsHead` holds it). Default: True.
        drop_path_rate (float): Stochastic depth, rising linearly over the
            blocks from 0. Default: 0.
        norm_cfg (dict): BatchNorm of the stem and the wavelet attention
            (the authors' segmentation models freeze it:
            ``dict(type='BN', requires_grad=False)``).
            Default: dict(type='BN').
        frozen_stages (int): Stages (with their patch embedding and norm)
            to freeze: 0 none. Default: 0.
        norm_eval (bool): Keep BatchNorm layers in eval mode in training.
            Default: False.
        with_cp (bool): Gradient checkpointing of each block.
            Default: False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Default: the authors' (truncated normal std 0.02 for linear
            layers, He normal by fan-out for convolutions, LayerNorm 1/0).
    """
    arch_settings = {
        's': dict(stem_hidden_dim=32, embed_dims=[64, 128, 320, 448],
                  num_heads=[2, 4, 10, 14], mlp_ratios=[8, 8, 4, 4],
                  depths=[3, 4, 6, 3], sr_ratios=[4, 2, 1, 1]),
        'b': dict(stem_hidden_dim=64, embed_dims=[64, 128, 320, 512],
                  num_heads=[2, 4, 10, 16], mlp_ratios=[8, 8, 4, 4],
                  depths=[3, 4, 12, 3], sr_ratios=[4, 2, 1, 1]),
        'l': dict(stem_hidden_dim=64, embed_dims=[96, 192, 384, 512],
                  num_heads=[3, 6, 12, 16], mlp_ratios=[8, 8, 4, 4],
                  depths=[3, 6, 18, 3], sr_ratios=[4, 2, 1, 1]),
    }

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 final_norm: bool = True,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 frozen_stages: int = 0,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = [
                     dict(type='TruncNormal', layer='Linear', std=.02,
                          bias=0.),
                     dict(type='Constant', layer='LayerNorm', val=1.,
                          bias=0.),
                     dict(type='Kaiming', layer='Conv2d', mode='fan_out',
                          nonlinearity='relu', distribution='normal',
                          bias=0.)
                 ]):
        super().__init__(init_cfg=init_cfg)
        arch = select_arch(self.arch_settings, arch)
        self.embed_dims = list(arch['embed_dims'])
        self.depths = list(arch['depths'])
        num_stages = len(self.depths)
        check_frozen_stages(frozen_stages, num_stages, 'stage')
        self.in_channels = in_channels
        self.out_indices = tuple(
            sorted(check_out_indices(out_indices, num_stages, 'stage')))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        for i, (dim, depth) in enumerate(zip(self.embed_dims, self.depths)):
            if i == 0:
                patch_embed = Stem(in_channels, arch['stem_hidden_dim'], dim,
                                   norm_cfg)
            else:
                patch_embed = DownSamples(self.embed_dims[i - 1], dim)
            first = sum(self.depths[:i])
            blocks = ModuleList(
                WaveViTBlock(
                    dim,
                    self._token_mixer(i, dim, arch['num_heads'][i],
                                      arch['sr_ratios'][i], norm_cfg),
                    arch['mlp_ratios'][i],
                    drop_path_rate=rates[first + j],
                    with_cp=with_cp) for j in range(depth))
            self.add_module(f'patch_embed{i + 1}', patch_embed)
            self.add_module(f'block{i + 1}', blocks)
            if final_norm or i < num_stages - 1:
                self.add_module(f'norm{i + 1}', nn.LayerNorm(dim, eps=1e-6))
        self._freeze_stages()

    def _token_mixer(self, stage: int, dim: int, num_heads: int,
                     sr_ratio: int, norm_cfg: dict) -> nn.Module:
        """A block's token mixer in ``stage`` (from 0): wavelet attention in
        the first two stages, plain attention after."""
        if stage < 2:
            return WaveAttention(dim, num_heads, sr_ratio, norm_cfg)
        return Attention(dim, num_heads)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects images of shape '
                f'(N, {self.in_channels}, H, W), got {tuple(x.shape)}; set '
                'in_channels to match your data')
        outs = []
        for i in range(len(self.depths)):
            x, h, w = getattr(self, f'patch_embed{i + 1}')(x)
            for block in getattr(self, f'block{i + 1}'):
                x = block(x, h, w)
            norm = getattr(self, f'norm{i + 1}', None)
            x = _tokens_to_map(x if norm is None else norm(x), h, w)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        for i in range(1, self.frozen_stages + 1):
            for name in ('patch_embed', 'block', 'norm'):
                module = getattr(self, f'{name}{i}', nn.Identity())
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'WaveViT':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
