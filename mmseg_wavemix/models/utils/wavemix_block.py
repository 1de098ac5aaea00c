# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The WaveMix block (Jeevan et al., arXiv 2205.14375, Fig. 1, Eq. 1-5)."""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg_wavemix.ops import HaarDWT
from .activation_memory import batch_norm_add, conv_gelu_conv2d

MAX_LEVEL = 4


def check_embed_dims_and_level(embed_dims, level) -> None:
    """Raise a ValueError naming ``level`` or ``embed_dims`` if invalid."""
    if not isinstance(level, int) or not 1 <= level <= MAX_LEVEL:
        raise ValueError(f'level must be an integer from 1 to {MAX_LEVEL} '
                         f'(1 is WaveMix-Lite), got {level!r}')
    if not isinstance(embed_dims, int) or embed_dims < 4 or embed_dims % 4:
        raise ValueError('embed_dims must be a positive multiple of 4 (each '
                         'block reduces it to embed_dims / 4 channels before '
                         f'the DWT), got {embed_dims!r}')


class WaveletLevelMLP(BaseModule):
    """Per-level unit of a WaveMix block ("FF" in the authors' code).

    1x1 conv (``in_channels -> hidden_channels``), activation, dropout, 1x1
    conv (``-> ff_channels``), then a 2x upsampling ``ConvTranspose2d(k=4,
    s=2, p=1)`` (``-> out_channels``) and a norm layer. No activation follows
    the norm, as in the paper.

    Args:
        in_channels (int): Input channels.
        hidden_channels (int): Channels after the first 1x1 conv.
        ff_channels (int): Channels after the second 1x1 conv.
        out_channels (int): Output channels (after upsampling).
        dropout (float): Dropout after the activation. Default: 0.
        norm_cfg (dict): Norm layer after the upsampling.
            Default: dict(type='BN').
        act_cfg (dict): Activation after the first conv.
            Default: dict(type='GELU').
        memory_efficient (bool): In training, keep only the input for
            backward and recompute ``fc1`` and the GELU there, and where a
            residual is added recover the BatchNorm's input from the output
            instead of keeping it (see :mod:`.activation_memory`). Same
            results up to float rounding. Default: True.
        init_cfg (dict or list[dict], optional): Initialization config.
            Default: None (PyTorch's default initialisation, as the authors).
    """

    def __init__(self,
                 in_channels: int,
                 hidden_channels: int,
                 ff_channels: int,
                 out_channels: int,
                 dropout: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 memory_efficient: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.memory_efficient = memory_efficient
        self.fc1 = nn.Conv2d(in_channels, hidden_channels, 1)
        self.act = build_activation_layer(act_cfg)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Conv2d(hidden_channels, ff_channels, 1)
        self.upsample = nn.ConvTranspose2d(
            ff_channels, out_channels, kernel_size=4, stride=2, padding=1)
        self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
        self.add_module(self.norm_name, norm)

    @property
    def norm(self) -> nn.Module:
        return getattr(self, self.norm_name)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """Run the MLP; add ``residual`` to its output if given.

        Args:
            x (Tensor): Input, (N, in_channels, h, w).
            residual (Tensor, optional): Added to the output, shape
                (N, out_channels, 2h, 2w). Default: None.
        """
        # conv_gelu_conv2d itself runs the plain layers without gradients
        if self.memory_efficient and self.training and self.drop.p == 0 and \
                type(self.act) is nn.GELU and self.act.approximate == 'none':
            x = conv_gelu_conv2d(x, self.fc1, self.fc2)
        else:
            x = self.fc2(self.drop(self.act(self.fc1(x))))
        x = self.upsample(x)
        if residual is None:
            return self.norm(x)
        if self.memory_efficient:
            return batch_norm_add(x, self.norm, residual)
        # In place: the norm does not keep its output for backward, and a
        # fresh (D, H, W) tensor costs page faults on CPU.
        return self.norm(x).add_(residual)


class WaveMixBlock(BaseModule):
    """A residual WaveMix block of ``level`` wavelet levels.

    The input (``embed_dims`` = D channels) is reduced to D/4 channels by a
    1x1 conv and decomposed by a cascaded 2D Haar DWT into levels 1..L. Each
    level k is packed back to D channels as ``concat(LL_k, LH/HL/HH_k)`` (the
    detail bands interleaved per channel, ``3 * c + band``, the authors'
    layout) at 1/2^k resolution. Levels are mixed coarse to fine: the coarsest
    level's MLP outputs D/2 channels upsampled 2x, which are concatenated with
    the next finer level, and so on; the finest MLP outputs D channels at the
    input resolution, added to the input. Level 1 alone is WaveMix-Lite.

    The authors recompute each level from the input (1 + 2 + ... + L
    single-level transforms); the cascade here gives identical numbers with L.

    Args:
        embed_dims (int): Channels D of the input and output; divisible by 4.
        level (int): Number of wavelet levels, 1 to 4. Default: 4.
        mlp_ratio (float): Hidden channels of each level MLP are
            ``embed_dims * mlp_ratio``. Default: 2.
        ff_channels (int, optional): Channels before each MLP's upsampling.
            Default: None (= ``embed_dims``).
        dropout (float): Dropout inside the level MLPs. Default: 0.
        norm_cfg (dict): Norm after each upsampling. Default: dict(type='BN').
        act_cfg (dict): Activation inside the MLPs. Default: dict(type='GELU').
        dwt_backend (str): ``'native'`` or ``'pytorch_wavelets'``.
            Default: 'native'.
        with_cp (bool): Use gradient checkpointing (saves activation memory
            at the cost of recomputation). Default: False.
        memory_efficient (bool): Keep fewer activations for backward (see
            :class:`WaveletLevelMLP`). Not used with ``with_cp``, which
            recomputes the whole block anyway. Default: True.
        init_cfg (dict or list[dict], optional): Initialization config.
            Default: None.
    """

    def __init__(self,
                 embed_dims: int,
                 level: int = 4,
                 mlp_ratio: float = 2,
                 ff_channels: Optional[int] = None,
                 dropout: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 dwt_backend: str = 'native',
                 with_cp: bool = False,
                 memory_efficient: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        check_embed_dims_and_level(embed_dims, level)
        hidden_channels = int(embed_dims * mlp_ratio)
        if hidden_channels < 1:
            raise ValueError(f'mlp_ratio must be > 0, got {mlp_ratio!r}')
        ff_channels = embed_dims if ff_channels is None else ff_channels
        if not isinstance(ff_channels, int) or ff_channels < 1:
            raise ValueError(f'ff_channels must be a positive integer or None, '
                             f'got {ff_channels!r}')
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout must be in [0, 1), got {dropout!r}')

        self.embed_dims = embed_dims
        self.level = level
        self.with_cp = with_cp
        self.reduction = nn.Conv2d(embed_dims, embed_dims // 4, 1)
        self.dwt = HaarDWT(backend=dwt_backend, packed=True)
        # mlps[k] serves level k + 1. The finest level returns D channels; the
        # others return D/2 channels, which join the next finer level's D.
        self.mlps = nn.ModuleList()
        for k in range(level):
            coarsest = k == level - 1
            self.mlps.append(
                WaveletLevelMLP(
                    in_channels=embed_dims if coarsest else
                    embed_dims + embed_dims // 2,
                    hidden_channels=hidden_channels,
                    ff_channels=ff_channels,
                    out_channels=embed_dims if k == 0 else embed_dims // 2,
                    dropout=dropout,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    memory_efficient=memory_efficient and not with_cp))

    def wavelet_levels(self, x: Tensor) -> List[Tensor]:
        """Reduce ``x`` and return the packed D-channel tensor of each level,
        finest first."""
        ll = self.reduction(x)
        channels = ll.shape[1]
        levels = []
        for _ in range(self.level):
            # concat(LL, LH/HL/HH of channel c at 3 * c + band), written in
            # place by the transform; the next level transforms its LL.
            levels.append(self.dwt(ll))
            ll = levels[-1][:, :channels]
        return levels

    def _mix_and_add(self, x: Tensor) -> Tensor:
        levels = self.wavelet_levels(x)
        if self.level == 1:
            return self.mlps[0](levels[0], residual=x)
        out = self.mlps[-1](levels[-1])
        for k in range(self.level - 2, 0, -1):
            out = self.mlps[k](torch.cat((levels[k], out), dim=1))
        return self.mlps[0](torch.cat((levels[0], out), dim=1), residual=x)

    def forward(self, x: Tensor) -> Tensor:
        size_divisor = 2**self.level
        if x.shape[-2] % size_divisor or x.shape[-1] % size_divisor:
            raise ValueError(
                f'WaveMixBlock of level {self.level} needs a height and width '
                f'divisible by {size_divisor}, got {tuple(x.shape[-2:])}; the '
                'WaveMix backbone pads its input to fit')
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._mix_and_add, x, use_reentrant=False)
        return self._mix_and_add(x)
