# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The ImageNet head of Wave-ViT (and SVT) for mmpretrain's
ImageClassifier."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import Tensor


class ClassAttention(nn.Module):
    """Attention of the class token (query) to all tokens (CaiT)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.kv = nn.Linear(dim, dim * 2)
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        heads = self.num_heads
        k, v = self.kv(x).reshape(n, length, 2, heads, -1).permute(
            2, 0, 3, 1, 4)
        q = self.q(x[:, :1]).reshape(n, 1, heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, 1, dim))


class FFN(nn.Module):

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClassBlock(nn.Module):
    """Updates the class token only: class attention and an FFN, each
    pre-normed with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads)
        self.mlp = FFN(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        cls = x[:, :1] + self.attn(self.norm1(x))
        cls = cls + self.mlp(self.norm2(cls))
        return torch.cat([cls, x[:, 1:]], dim=1)


@MODELS.register_module()
class WaveViTClsHead(ClsHead):
    """Wave-ViT's ImageNet head: a class token (the mean of the last stage's
    tokens) refined by a class-attention block, the stage's LayerNorm, then
    a linear classifier of the class token plus half the maximum over the
    tokens of the token-labelling classifier (the authors' eval-time
    output). Use it with ``WaveViT(final_norm=False)``; SVT's authors use
    the same head (``ScatteringViT(final_norm=False)``).

    Token labelling itself (dense per-token targets from a teacher and
    MixToken) is not part of this head: trained with image labels, the loss
    sees the same output as evaluation.

    Args:
        num_classes (int): Classes.
        in_channels (int): Channels of the last stage.
        num_heads (int): Heads of the class attention (the last stage's).
        mlp_ratio (float): FFN ratio of the class block. Default: 4.
        aux_weight (float): Weight of the token-labelling classifier's
            maximum. Default: 0.5.
        init_cfg (dict | list[dict], optional): Initialization config.
            Default: truncated normal (std 0.02) for linear layers,
            LayerNorm 1/0, as the authors.
        **kwargs: Arguments of mmpretrain's ``ClsHead`` (``loss``,
            ``topk``, ``cal_acc``).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 aux_weight: float = 0.5,
                 init_cfg: Optional[list] = [
                     dict(type='TruncNormal', layer='Linear', std=.02,
                          bias=0.),
                     dict(type='Constant', layer='LayerNorm', val=1.,
                          bias=0.)
                 ],
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be > 0, got {num_classes!r}')
        self.num_classes = num_classes
        self.aux_weight = aux_weight
        self.post_network = nn.ModuleList(
            [ClassBlock(in_channels, num_heads, mlp_ratio)])
        self.norm = nn.LayerNorm(in_channels, eps=1e-6)
        self.fc = nn.Linear(in_channels, num_classes)
        self.aux_fc = nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """The normalised class token followed by the other tokens,
        (N, 1 + H * W, C), from the last stage's (N, C, H, W) map."""
        tokens = feats[-1].flatten(2).transpose(1, 2)
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        for block in self.post_network:
            x = block(x)
        return self.norm(x)

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        x = self.pre_logits(feats)
        return self.fc(x[:, 0]) + self.aux_weight * self.aux_fc(
            x[:, 1:]).amax(dim=1)
