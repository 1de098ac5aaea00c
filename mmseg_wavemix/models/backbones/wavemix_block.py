# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The WaveMix block and its level MLP (arXiv 2205.14375, Fig. 1, Eq. 1-5).
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg_wavemix.ops import HaarDWT

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
    """The MLP of one wavelet level ("FF" in the authors' code).

    1x1 conv (``in_channels -> hidden_channels``), activation, dropout, 1x1
    conv (``-> ff_channels``), a 2x upsampling ``ConvTranspose2d(k=4, s=2,
    p=1)`` (``-> out_channels``) and a norm layer; no activation after the
    norm, as in the paper.

    Args:
        in_channels (int): Input channels.
        hidden_channels (int): Channels after the first 1x1 conv.
        ff_channels (int): Channels after the second 1x1 conv.
        out_channels (int): Output channels (after upsampling).
        dropout (float): Dropout after the activation. Default: 0.
        norm_cfg (dict): Norm after the upsampling. Default: dict(type='BN').
        act_cfg (dict): Activation after the first conv.
            Default: dict(type='GELU').
        init_cfg (dict, optional): Initialization config. Default: None
            (PyTorch's default initialisation, as the authors).
    """

    def __init__(self,
                 in_channels: int,
                 hidden_channels: int,
                 ff_channels: int,
                 out_channels: int,
                 dropout: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
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

    def forward(self,
                x: Tensor,
                residual: Optional[Tensor] = None,
                coarser: Optional[Tensor] = None) -> Tensor:
        """The MLP of ``x``, or of ``cat([x, coarser], 1)`` if ``coarser``
        (the coarser level's output) is given, plus ``residual`` (N,
        out_channels, 2h, 2w) if given."""
        if coarser is not None:
            x = torch.cat((x, coarser), dim=1)
        x = self.fc2(self.drop(self.act(self.fc1(x))))
        x = self.norm(self.upsample(x))
        # In place: the norm keeps its input, not its output, for backward,
        # and a fresh tensor costs page faults on CPU.
        return x if residual is None else x.add_(residual)


class WaveMixBlock(BaseModule):
    """A residual WaveMix block of ``level`` wavelet levels (paper Fig. 1).

    The input (D = ``embed_dims`` channels) is reduced to D/4 channels by a
    1x1 conv and decomposed by a cascaded 2D Haar DWT. Level k is packed back
    to D channels, ``concat(LL_k, LH/HL/HH_k)`` (band b of channel c at
    ``3 * c + b``, the authors' layout), at 1/2^k resolution. Levels are
    mixed coarse to fine: the coarsest level's MLP gives D/2 channels
    upsampled 2x, concatenated with the next finer level, and so on; the
    finest MLP gives D channels at the input resolution, added to the input.
    Level 1 alone is WaveMix-Lite. (The authors recompute each level from the
    input; the cascade gives the same numbers with fewer transforms.)

    Args:
        embed_dims (int): Channels D of the input and output; divisible by 4.
        level (int): Wavelet levels, 1 to 4. Default: 4.
        mlp_ratio (float): Hidden channels of each level MLP are
            ``embed_dims * mlp_ratio``. Default: 2.
        ff_channels (int, optional): Channels before each MLP's upsampling.
            Default: None (= ``embed_dims``).
        dropout (float): Dropout inside the level MLPs. Default: 0.
        norm_cfg (dict): Norm after each upsampling. Default: dict(type='BN').
        act_cfg (dict): Activation inside the MLPs. Default: dict(type='GELU').
        dwt_backend (str): ``'native'`` or ``'pytorch_wavelets'``.
            Default: 'native'.
        with_cp (bool): Gradient checkpointing: the block is recomputed in
            backward instead of keeping its activations. Default: False.
        memory_efficient (bool): Level MLPs that keep fewer activations for
            backward (:class:`~mmseg_wavemix.models.accel.
            MemoryEfficientLevelMLP`). Not together with ``with_cp``.
            Default: False.
        init_cfg (dict, optional): Initialization config. Default: None.
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
                 memory_efficient: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        check_embed_dims_and_level(embed_dims, level)
        hidden_channels = int(embed_dims * mlp_ratio)
        if hidden_channels < 1:
            raise ValueError(f'mlp_ratio must be > 0, got {mlp_ratio!r}')
        ff_channels = embed_dims if ff_channels is None else ff_channels
        if not isinstance(ff_channels, int) or ff_channels < 1:
            raise ValueError('ff_channels must be a positive integer or '
                             f'None, got {ff_channels!r}')
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout must be in [0, 1), got {dropout!r}')
        if with_cp and memory_efficient:
            raise ValueError('with_cp and memory_efficient both save training '
                             'memory: with_cp recomputes whole blocks, so '
                             'memory_efficient would add nothing; set one')
        mlp_type = WaveletLevelMLP
        if memory_efficient:
            # imported here: the speed paths build on the plain model
            from ..accel import MemoryEfficientLevelMLP as mlp_type
        self.embed_dims = embed_dims
        self.level = level
        self.with_cp = with_cp
        self.memory_efficient = memory_efficient
        self.reduction = nn.Conv2d(embed_dims, embed_dims // 4, 1)
        self.dwt = HaarDWT(backend=dwt_backend, packed=True)
        # mlps[k] serves level k + 1. The finest returns D channels; the
        # others D/2, which join the next finer level's D.
        self.mlps = nn.ModuleList(
            mlp_type(
                in_channels=embed_dims + (0 if k == level - 1 else
                                          embed_dims // 2),
                hidden_channels=hidden_channels,
                ff_channels=ff_channels,
                out_channels=embed_dims if k == 0 else embed_dims // 2,
                dropout=dropout,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg) for k in range(level))

    def wavelet_levels(self, x: Tensor) -> List[Tensor]:
        """The packed D-channel tensor of each level of ``reduction(x)``,
        finest first."""
        ll = self.reduction(x)
        channels = ll.shape[1]
        levels = []
        for _ in range(self.level):
            levels.append(self.dwt(ll))  # the next level transforms its LL
            ll = levels[-1][:, :channels]
        return levels

    def _mix_and_add(self, x: Tensor) -> Tensor:
        if self.memory_efficient and self.training and \
                torch.is_grad_enabled():
            # imported here: the speed paths build on the plain model
            from ..accel import mix_levels_keeping_block_input
            return mix_levels_keeping_block_input(self, x)
        levels = self.wavelet_levels(x)
        out = None
        for k in range(self.level - 1, -1, -1):
            out = self.mlps[k](
                levels[k], coarser=out, residual=x if k == 0 else None)
        return out

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
