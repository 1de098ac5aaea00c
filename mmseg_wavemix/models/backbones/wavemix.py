# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""WaveMix (Jeevan et al., "WaveMix: A Resource-efficient Neural Network for
Image Analysis", arXiv 2205.14375): the backbone and the paper's variants.
Its block is in :mod:`.wavemix_block`; speed paths live in
:mod:`mmseg_wavemix.models.accel`."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_wavemix.ops import haar_lowpass

from ..utils.arch import check_frozen_stages, check_out_indices, select_arch
from .wavemix_block import WaveMixBlock, check_embed_dims_and_level

STEM_TYPES = ('strided', 'patchify')


@MODELS.register_module()
class WaveMix(BaseModule):
    """WaveMix backbone: a convolutional stem and ``depth`` residual
    :class:`WaveMixBlock` s, all at one resolution with ``embed_dims``
    channels.

    For classification with mmpretrain, ``custom_imports =
    dict(imports=['mmseg_wavemix.classification'])`` registers it there too;
    use ``stem_type='patchify'`` (or the strided stem) with
    ``ImageClassifier``, ``GlobalAveragePooling`` and ``LinearClsHead``.

    Inputs of any size are accepted: the stem output is zero-padded at the
    bottom/right to a multiple of ``2 ** level`` and the outputs are cropped
    back, so a 1000x2000 image gives 250x500 features (stride 4).

    Args:
        arch (str | dict): A variant of the paper (see :attr:`arch_settings`)
            or a dict of ``embed_dims``, ``depth`` and ``level``.
            Default: '256x16-l4'.
        in_channels (int): Input image channels. Default: 3.
        embed_dims (int, optional): Channels D of every block, divisible by
            4; overrides the arch's. Default: None.
        depth (int, optional): Number of blocks; overrides the arch's.
            Default: None.
        level (int, optional): Wavelet levels per block, 1 to 4 (1 is
            WaveMix-Lite); overrides the arch's. Default: None.
        mlp_ratio (float): Hidden channels of the level MLPs are
            ``embed_dims * mlp_ratio``. Default: 2.
        ff_channels (int, optional): Channels before each MLP's upsampling.
            Default: None (= ``embed_dims``).
        dropout (float): Dropout inside the level MLPs. Default: 0.
        stem_type (str): ``'strided'``, two 3x3 convs of stride
            ``stem_stride`` without norm or activation (segmentation), or
            ``'patchify'``, two 3x3 convs, a ``patch_size`` conv of that
            stride, the activation and the norm (classification, paper
            Appendix C.3). Default: 'strided'.
        stem_stride (int): Stride of each strided stem conv. Default: 2.
        patch_size (int): Patch size of the patchify stem. Default: 4.
        out_indices (Sequence[int] | int): Blocks whose outputs are returned;
            negative indices count from the end. Default: -1.
        out_downsamples (Sequence[int], optional): For each output, how many
            times to halve it with the Haar low-pass band (the 2x2 mean), to
            feed decoders that expect a pyramid: with ``out_indices=(3, 7,
            11, 15)``, ``(0, 1, 2, 3)`` gives strides 4/8/16/32 and ``(0, 1,
            1, 1)`` 4/8/8/8 (mmseg's ``d8``). Default: None (none).
        norm_cfg (dict): Norm layers. Default: dict(type='BN',
            requires_grad=True).
        act_cfg (dict): Activation of the MLPs (and the patchify stem).
            Default: dict(type='GELU').
        dwt_backend (str): Haar DWT implementation, ``'native'`` or
            ``'pytorch_wavelets'`` (slower, for cross-checks).
            Default: 'native'.
        with_cp (bool): Gradient checkpointing of each block. Default: False.
        memory_efficient (bool): Level MLPs that recompute their hidden layer
            in backward and do not keep the finest BatchNorm input (recovered
            from the block output in float32); under AMP each keeps only its
            input (see :class:`~mmseg_wavemix.models.accel.
            MemoryEfficientLevelMLP` for what applies where). Under AMP the
            strided stem (no norm: exact) keeps only the image and
            recomputes its D/2-channel half-resolution features in backward
            (float32 keeps its speed, and CPU numbers). In float32 on
            CPU about 40% less training memory for ~5% more time; the same
            results up to float rounding. Not together with ``with_cp``.
            Default: False.
        frozen_stages (int): -1 none, 0 the stem, k the stem and blocks
            0..k-1 (no gradients, norm layers in eval mode). Default: -1.
        norm_eval (bool): Keep norm layers in eval mode in training.
            Default: False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Default: None (PyTorch's default initialisation, as the authors).
    """
    # The paper's models: D/depth and levels (Tables 1, 6 and C.3).
    arch_settings = {
        '256x16-l4': dict(embed_dims=256, depth=16, level=4),
        '256x16-l3': dict(embed_dims=256, depth=16, level=3),
        '256x16-l2': dict(embed_dims=256, depth=16, level=2),
        'lite-256x16': dict(embed_dims=256, depth=16, level=1),
        'lite-128x8': dict(embed_dims=128, depth=8, level=1),
        'lite-128x7': dict(embed_dims=128, depth=7, level=1),
        '192x16-l3': dict(embed_dims=192, depth=16, level=3),
    }

    def __init__(self,
                 arch: Union[str, dict] = '256x16-l4',
                 in_channels: int = 3,
                 embed_dims: Optional[int] = None,
                 depth: Optional[int] = None,
                 level: Optional[int] = None,
                 mlp_ratio: float = 2,
                 ff_channels: Optional[int] = None,
                 dropout: float = 0.,
                 stem_type: str = 'strided',
                 stem_stride: int = 2,
                 patch_size: int = 4,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_downsamples: Optional[Sequence[int]] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='GELU'),
                 dwt_backend: str = 'native',
                 with_cp: bool = False,
                 memory_efficient: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        arch = select_arch(self.arch_settings, arch)
        # the free arguments override the arch's
        embed_dims = arch['embed_dims'] if embed_dims is None else embed_dims
        depth = arch['depth'] if depth is None else depth
        level = arch['level'] if level is None else level
        for name, value in (('in_channels', in_channels), ('depth', depth),
                            ('stem_stride', stem_stride), ('patch_size',
                                                           patch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got '
                                 f'{value!r}')
        check_embed_dims_and_level(embed_dims, level)
        if stem_type not in STEM_TYPES:
            raise ValueError(f'stem_type must be one of {STEM_TYPES}, got '
                             f'{stem_type!r}')
        out_indices = check_out_indices(out_indices, depth, 'block')
        out_downsamples = (0, ) * len(out_indices) \
            if out_downsamples is None else tuple(out_downsamples)
        if len(out_downsamples) != len(out_indices) or any(
                not isinstance(k, int) or k < 0 for k in out_downsamples):
            raise ValueError(
                'out_downsamples must give one integer >= 0 per entry of '
                f'out_indices {out_indices}, got {out_downsamples!r}')
        check_frozen_stages(frozen_stages, depth, 'block', lowest=-1)

        self.in_channels = in_channels
        self.embed_dims = embed_dims
        self.depth = depth
        self.level = level
        self.stem_type = stem_type
        self.out_indices = out_indices
        self.out_downsamples = out_downsamples
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.memory_efficient = memory_efficient
        self.stem_downsample = stem_stride**2 if stem_type == 'strided' \
            else patch_size
        if stem_type == 'strided':
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, embed_dims // 2, 3, stem_stride, 1),
                nn.Conv2d(embed_dims // 2, embed_dims, 3, stem_stride, 1))
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, embed_dims // 4, 3, 1, 1),
                nn.Conv2d(embed_dims // 4, embed_dims // 2, 3, 1, 1),
                nn.Conv2d(embed_dims // 2, embed_dims, patch_size,
                          patch_size), build_activation_layer(act_cfg),
                build_norm_layer(norm_cfg, embed_dims)[1])
        self.layers = nn.ModuleList(
            WaveMixBlock(
                embed_dims,
                level=level,
                mlp_ratio=mlp_ratio,
                ff_channels=ff_channels,
                dropout=dropout,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg,
                dwt_backend=dwt_backend,
                with_cp=with_cp,
                memory_efficient=memory_efficient) for _ in range(depth))
        self._freeze_stages()

    @property
    def size_divisor(self) -> int:
        """Input sizes that need no internal padding are multiples of this."""
        return self.stem_downsample * 2**self.level

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'WaveMix expects images of shape (N, {self.in_channels}, H, '
                f'W), got {tuple(x.shape)}; set in_channels to match your '
                'data')
        if self.memory_efficient and self.stem_type == 'strided' and \
                torch.is_grad_enabled() and \
                torch.is_autocast_enabled(x.device.type) and \
                not torch.jit.is_tracing():
            # two convolutions, nothing random: no RNG state to keep (which
            # a CUDA graph could not record)
            x = cp.checkpoint(self.stem, x, use_reentrant=False,
                              preserve_rng_state=False)
        else:
            x = self.stem(x)
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % 2**self.level, -w % 2**self.level
        if pad_h or pad_w:  # zeros at the bottom/right
            x = F.pad(x, (0, pad_w, 0, pad_h))
        outs = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                outs[i] = x[..., :h, :w]
        results = []
        for i, downsamples in zip(self.out_indices, self.out_downsamples):
            out = outs[i]
            for _ in range(downsamples):
                out = haar_lowpass(out)
            results.append(out)
        return tuple(results)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.layers[:self.frozen_stages]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'WaveMix':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
