# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""SVT, the Scattering Vision Transformer (Patro & Agneeswaran, "Scattering
Vision Transformer: Spectral Mixing Matters", NeurIPS 2023): its scattering
layer and backbone.

SVT is Wave-ViT's network with the first stage's token mixer replaced by a
scattering layer and plain attention in the other three stages; module and
parameter names are the authors' (github badripatro/svt, ``svt.py``),
without the DTCWT's fixed filter buffers.
"""
from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.utils import to_2tuple
from mmseg.registry import MODELS
from torch import Tensor

from mmseg_wavemix.ops import DTCWT

from .wavevit import Attention, WaveViT, _tokens_to_map


def _complex_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Block-diagonal complex linear map of ``x`` (..., blocks, 2 * d), each
    block's real parts then imaginary parts, by ``weight`` (2, blocks, d, k)
    and ``bias`` (2, blocks, k) (real, imaginary): (..., blocks, 2 * k)."""
    real, imag = weight
    # [re, im] @ [[Wr, Wi], [-Wi, Wr]] = [re Wr - im Wi, re Wi + im Wr]: the
    # complex product as one real matmul per block instead of four
    matrix = torch.cat([torch.cat([real, imag], dim=-1),
                        torch.cat([-imag, real], dim=-1)], dim=-2)
    return torch.einsum('...nd,ndk->...nk', x, matrix) + bias.transpose(
        0, 1).flatten(1)


class ScatteringLayer(nn.Module):
    """SVT's token mixer: a level-1 dual-tree complex wavelet transform
    (DTCWT) of the tokens' map; the low-pass band gated element-wise by a
    learned filter (spectral gating, ``complex_weight_ll``, real despite its
    name); the six oriented complex high-pass bands mixed across channels
    by a two-layer complex MLP with block-diagonal weights and ReLU on the
    real and imaginary parts between the layers (Einstein blending,
    ``complex_weight_lh_*``); then the inverse DTCWT.

    The DTCWT runs in float32, also under autocast (:class:`DTCWT`).

    Args:
        dim (int): Channels, divisible by ``num_blocks``.
        filter_size (tuple[int, int]): Size of the low-pass filter, the
            (even) grid of the model's ``img_size``. On another grid the
            filter is resized to it (bicubic) in each forward, which costs
            about what the gating does, and gradients reach the stored one.
        num_blocks (int): Diagonal blocks of the complex MLP. Default: 4.
    """

    def __init__(self,
                 dim: int,
                 filter_size: Tuple[int, int],
                 num_blocks: int = 4):
        super().__init__()
        if dim % num_blocks:
            raise ValueError(f'dim ({dim}) must be divisible by num_blocks '
                             f'({num_blocks})')
        self.num_blocks = num_blocks
        d = dim // num_blocks
        self.dtcwt = DTCWT(biort='near_sym_b')  # the authors' (J=1)
        # the authors' initialisation: N(0, 0.02^2) for all five
        self.complex_weight_ll = nn.Parameter(
            torch.randn(dim, *filter_size) * 0.02)
        self.complex_weight_lh_1 = nn.Parameter(
            torch.randn(2, num_blocks, d, d) * 0.02)
        self.complex_weight_lh_2 = nn.Parameter(
            torch.randn(2, num_blocks, d, d) * 0.02)
        self.complex_weight_lh_b1 = nn.Parameter(
            torch.randn(2, num_blocks, d) * 0.02)
        self.complex_weight_lh_b2 = nn.Parameter(
            torch.randn(2, num_blocks, d) * 0.02)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        low, highs = self.dtcwt(_tokens_to_map(x, h, w))
        low = low * self._low_pass_filter(low.shape[-2:])
        x = self.dtcwt.inverse(low, self._blend(highs), (h, w))
        return x.flatten(2).transpose(1, 2)

    def _low_pass_filter(self, size: Tuple[int, int]) -> Tensor:
        weight = self.complex_weight_ll
        if weight.shape[-2:] != size:
            weight = F.interpolate(
                weight[None], size=tuple(size), mode='bicubic',
                align_corners=False)[0]
        return weight

    def _blend(self, highs: Tensor) -> Tensor:
        """The complex MLP over the channels of the (N, C, 6, h, w, 2)
        high-pass bands."""
        x = highs.permute(0, 2, 3, 4, 5, 1)  # (N, 6, h, w, re/im, C)
        x = x.unflatten(-1, (self.num_blocks, -1)).transpose(-3, -2)
        x = x.flatten(-2)  # (N, 6, h, w, blocks, [re; im] of a block)
        x = F.relu(
            _complex_linear(x, self.complex_weight_lh_1,
                            self.complex_weight_lh_b1))
        x = _complex_linear(x, self.complex_weight_lh_2,
                            self.complex_weight_lh_b2)
        x = x.unflatten(-1, (2, -1)).transpose(-3, -2).flatten(-2)
        return x.permute(0, 5, 1, 2, 3, 4)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights trained at another img_size (224 for ImageNet): resize the
        # low-pass filter to this model's, as ViTs resize position embeddings
        key = prefix + 'complex_weight_ll'
        size = self.complex_weight_ll.shape[-2:]
        weight = state_dict.get(key)
        if weight is not None and weight.dim() == 3 and \
                weight.shape[0] == self.complex_weight_ll.shape[0] and \
                weight.shape[-2:] != size:
            print_log(
                f'resized {key} from {tuple(weight.shape[-2:])} to '
                f'{tuple(size)} (a model built for another img_size)',
                logger='current')
            state_dict[key] = F.interpolate(
                weight[None].float(), size=tuple(size), mode='bicubic',
                align_corners=False)[0].to(weight.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@MODELS.register_module()
class ScatteringViT(WaveViT):
    """SVT backbone (registered as ``ScatteringViT``: mmseg's Twins already
    registers ``SVT``): four stages of transformer blocks at strides 4/8/16/32,
    the scattering layer (:class:`ScatteringLayer`) as the first stage's
    token mixer, multi-head self-attention in the others; the stem,
    downsampling, FFN and norms of :class:`WaveViT`.

    Each stage output is normalised by its stage's LayerNorm (``norm{i}``)
    and returned as an (N, C, H, W) map. The authors' code runs at 224x224
    only (the low-pass filter is sized to the 56x56 first-stage grid); here
    ``img_size`` sizes the filter, and other input sizes resize it (our
    extension; at ``img_size`` the numbers are the authors').

    Args:
        arch (str | dict): ``'s'``, ``'b'``, ``'l'`` (the authors'
            ``svt_s``/``svt_b``/``svt_l``, :attr:`arch_settings`; the
            ``sr_ratios`` are unused, as in their code) or a dict of the same
            keys. Default: 's'.
        img_size (int | tuple[int, int]): The input size the low-pass filter
            is made for: the first-stage grid, rounded up to even.
            Default: 224.
        in_channels (int): Input channels. Default: 3.
        out_indices (Sequence[int] | int): Stages to output.
            Default: (0, 1, 2, 3).
        final_norm (bool): Normalise the last stage's output with its
            ``norm4``; False for the authors' classifier, whose head holds
            it (:class:`WaveViTClsHead`). Default: True.
        drop_path_rate (float): Stochastic depth, rising linearly over the
            blocks from 0. Default: 0.
        norm_cfg (dict): BatchNorm of the stem. Default: dict(type='BN').
        frozen_stages (int): Stages (with their patch embedding and norm)
            to freeze: 0 none. Default: 0.
        norm_eval (bool): Keep BatchNorm layers in eval mode in training.
            Default: False.
        with_cp (bool): Gradient checkpointing of each block.
            Default: False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Default: the authors' (truncated normal std 0.02 for linear
            layers, He normal by fan-out for convolutions, LayerNorm 1/0;
            the scattering weights N(0, 0.02^2) when built).

    Arguments after ``img_size`` are :class:`WaveViT`'s, passed by keyword.
    """
    arch_settings = WaveViT.arch_settings  # the authors': the same numbers

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 **kwargs):
        img_size = to_2tuple(img_size)
        if len(img_size) != 2 or min(img_size) < 1:
            raise ValueError(f'img_size must be a positive int or (H, W), '
                             f'got {img_size!r}')
        # Read by _token_mixer while WaveViT.__init__ builds the blocks:
        # the first-stage grid after the stem's two stride-2 convolutions
        # (ceil(s / 4)), rounded up to even as the DTCWT pads it.
        self.filter_size = tuple(2 * -(-s // 8) for s in img_size)
        self.img_size = tuple(img_size)
        super().__init__(arch=arch, **kwargs)

    def _token_mixer(self, stage: int, dim: int, num_heads: int,
                     sr_ratio: int, norm_cfg: dict) -> nn.Module:
        if stage == 0:
            return ScatteringLayer(dim, self.filter_size)
        return Attention(dim, num_heads)
