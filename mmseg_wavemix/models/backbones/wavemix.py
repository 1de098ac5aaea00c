# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import Optional, Sequence, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_wavemix.ops import DWT_BACKENDS, haar_lowpass
from mmseg_wavemix.registry import register_for_mmpretrain
from ..utils import WaveMixBlock
from ..utils.wavemix_block import check_embed_dims_and_level

STEM_TYPES = ('strided', 'patchify')


@register_for_mmpretrain
@MODELS.register_module()
class WaveMix(BaseModule):
    """WaveMix backbone (Jeevan et al., "WaveMix: A Resource-efficient Neural
    Network for Image Analysis", arXiv 2205.14375).

    Registered in mmseg and, when installed, mmpretrain: for classification
    use ``stem_type='patchify'`` (or the strided stem) with mmpretrain's
    ``ImageClassifier``, ``GlobalAveragePooling`` and ``LinearClsHead``.

    A convolutional stem followed by ``depth`` residual :class:`WaveMixBlock`
    s, all at one resolution (1/``stem_stride``^2 of the input for the strided
    stem, 1/``patch_size`` for the patchify stem) and ``embed_dims`` channels.

    Inputs of any size are accepted: the stem output is zero-padded at the
    bottom/right to a multiple of ``2 ** level`` and the outputs are cropped
    back, so a 1000x2000 image gives 250x500 features (stride 2).

    Args:
        in_channels (int): Input image channels. Default: 3.
        embed_dims (int): Channels D of every block; divisible by 4.
            Default: 256.
        depth (int): Number of WaveMix blocks. Default: 16.
        level (int): Wavelet levels per block, 1 to 4 (1 is WaveMix-Lite).
            Default: 4.
        mlp_ratio (float): Hidden channels of the level MLPs are
            ``embed_dims * mlp_ratio``. Default: 2.
        ff_channels (int, optional): Channels before each MLP's upsampling.
            Default: None (= ``embed_dims``).
        dropout (float): Dropout inside the level MLPs. Default: 0.
        stem_type (str): ``'strided'``, two 3x3 convs of stride
            ``stem_stride`` without norm or activation (the segmentation
            paper), or ``'patchify'``, two 3x3 convs then a
            ``patch_size`` x ``patch_size`` conv of that stride, GELU and the
            norm layer (classification, paper Appendix C.3).
            Default: 'strided'.
        stem_stride (int): Stride of each strided stem conv. Default: 2.
        patch_size (int): Patch size of the patchify stem. Default: 4.
        out_indices (Sequence[int] | int): Blocks whose outputs are returned;
            negative indices count from the end. Default: -1 (the last block).
        out_downsamples (Sequence[int], optional): For each output, how many
            times to halve its resolution with the parameter-free Haar
            low-pass band (``LL / 2``, the 2x2 mean), to feed decoders that
            expect a feature pyramid. With the strided stem (stride 4 in
            all), ``out_indices=(3, 7, 11, 15)`` and ``(0, 1, 2, 3)`` give
            strides 4/8/16/32 (like ResNet); ``(0, 1, 1, 1)`` gives 4/8/8/8
            (like mmseg's dilated ``d8`` ResNets). Every output has
            ``embed_dims`` channels. Default: None (all at the blocks'
            resolution).
        norm_cfg (dict): Norm layers of the blocks (and the patchify stem).
            Default: dict(type='BN', requires_grad=True).
        act_cfg (dict): Activation of the level MLPs (and the patchify stem).
            Default: dict(type='GELU').
        dwt_backend (str): Haar DWT implementation, ``'native'`` or
            ``'pytorch_wavelets'`` (slower, for cross-checks).
            Default: 'native'.
        with_cp (bool): Gradient checkpointing of each block, which trades
            recomputation for activation memory. Default: False.
        memory_efficient (bool): Blocks recompute their MLPs' hidden layers
            (1x1 convolution and GELU) in backward and recover their last
            BatchNorm's input from the block output instead of keeping them:
            about 40% less training memory for recomputing about 15% of the
            blocks' forward FLOPs, same results up to float rounding. Not
            used with ``with_cp``. Default: True.
        frozen_stages (int): Stages to freeze (no gradients, norm layers in
            eval mode): -1 none, 0 the stem, k the stem and blocks 0..k-1.
            Default: -1.
        norm_eval (bool): Keep norm layers in eval mode during training
            (frozen running statistics). Default: False.
        init_cfg (dict or list[dict], optional): Initialization config, e.g.
            ``dict(type='Pretrained', checkpoint=...)``. Default: None
            (PyTorch's default initialisation, as the authors).
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 256,
                 depth: int = 16,
                 level: int = 4,
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
                 memory_efficient: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        _check_int('in_channels', in_channels, 1)
        _check_int('depth', depth, 1)
        _check_int('stem_stride', stem_stride, 1)
        _check_int('patch_size', patch_size, 1)
        check_embed_dims_and_level(embed_dims, level)
        if stem_type not in STEM_TYPES:
            raise ValueError(f'stem_type must be one of {STEM_TYPES}, got '
                             f'{stem_type!r}')
        if dwt_backend not in DWT_BACKENDS:
            raise ValueError(f'dwt_backend must be one of {DWT_BACKENDS}, got '
                             f'{dwt_backend!r}')
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(out_indices)
        if not out_indices or any(not -depth <= i < depth for i in out_indices):
            raise ValueError(f'out_indices must be block indices in '
                             f'[-{depth}, {depth - 1}] (depth={depth}), got '
                             f'{out_indices!r}')
        if out_downsamples is None:
            out_downsamples = (0, ) * len(out_indices)
        out_downsamples = tuple(out_downsamples)
        if len(out_downsamples) != len(out_indices) or any(
                not isinstance(k, int) or k < 0 for k in out_downsamples):
            raise ValueError(
                'out_downsamples must give one integer >= 0 per entry of '
                f'out_indices {out_indices}, got {out_downsamples!r}')
        if not -1 <= frozen_stages <= depth:
            raise ValueError(f'frozen_stages must be in [-1, {depth}] (depth='
                             f'{depth}), got {frozen_stages!r}')

        self.in_channels = in_channels
        self.embed_dims = embed_dims
        self.depth = depth
        self.level = level
        self.stem_type = stem_type
        self.out_indices = tuple(i % depth for i in out_indices)
        self.out_downsamples = out_downsamples
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.stem_downsample = stem_stride**2 if stem_type == 'strided' \
            else patch_size
        self.stem = self._make_stem(stem_type, in_channels, embed_dims,
                                    stem_stride, patch_size, norm_cfg, act_cfg)
        self.layers = nn.ModuleList(
            WaveMixBlock(
                embed_dims=embed_dims,
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

    @staticmethod
    def _make_stem(stem_type: str, in_channels: int, embed_dims: int,
                   stem_stride: int, patch_size: int, norm_cfg: dict,
                   act_cfg: dict) -> nn.Sequential:
        if stem_type == 'strided':
            return nn.Sequential(
                nn.Conv2d(in_channels, embed_dims // 2, 3, stem_stride, 1),
                nn.Conv2d(embed_dims // 2, embed_dims, 3, stem_stride, 1))
        return nn.Sequential(
            nn.Conv2d(in_channels, embed_dims // 4, 3, 1, 1),
            nn.Conv2d(embed_dims // 4, embed_dims // 2, 3, 1, 1),
            nn.Conv2d(embed_dims // 2, embed_dims, patch_size, patch_size),
            build_activation_layer(act_cfg),
            build_norm_layer(norm_cfg, embed_dims)[1])

    @property
    def size_divisor(self) -> int:
        """Input sizes that need no internal padding are multiples of this."""
        return self.stem_downsample * 2**self.level

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'WaveMix expects images of shape (N, {self.in_channels}, H, W)'
                f', got {tuple(x.shape)}; set in_channels to match your data')
        x = self.stem(x)
        h, w = x.shape[-2:]
        block_divisor = 2**self.level
        pad_h, pad_w = -h % block_divisor, -w % block_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        block_outs = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                block_outs[i] = x[..., :h, :w] if pad_h or pad_w else x
        outs = []
        for i, downsamples in zip(self.out_indices, self.out_downsamples):
            out = block_outs[i]
            for _ in range(downsamples):
                out = haar_lowpass(out)
            outs.append(out)
        return tuple(outs)

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


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got '
                         f'{value!r}')
