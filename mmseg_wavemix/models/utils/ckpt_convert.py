# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the authors' weights (WaveMix from pip ``wavemix==0.2.4``,
Wave-ViT, SVT) to this package's names."""
import re
from collections import OrderedDict
from typing import Dict, Mapping

from torch import Tensor

# Sub-modules of the authors' per-level nn.Sequential "feedforward":
# 0 conv, 1 GELU, 2 Dropout, 3 conv, 4 ConvTranspose2d, 5 BatchNorm2d.
_LEVEL_MLP_LAYERS = {'0': 'fc1', '3': 'fc2', '4': 'upsample', '5': 'bn'}

_RULES = [
    # stem (both the strided and the patchify stem keep their indices)
    (re.compile(r'^conv\.(\d+)\.(.+)$'),
     lambda m: f'backbone.stem.{m[1]}.{m[2]}'),
    (re.compile(r'^layers\.(\d+)\.reduction\.(.+)$'),
     lambda m: f'backbone.layers.{m[1]}.reduction.{m[2]}'),
    # Level1Waveblock's unit is "feedforward", LevelkWaveblock's "feedforwardk"
    (re.compile(r'^layers\.(\d+)\.feedforward(\d?)\.([0345])\.(.+)$'),
     lambda m: (f'backbone.layers.{m[1]}.mlps.{int(m[2] or 1) - 1}.'
                f'{_LEVEL_MLP_LAYERS[m[3]]}.{m[4]}')),
    # segmentation decoder: two ConvTranspose2d then the 1x1 classifier
    (re.compile(r'^expand\.([01])\.(.+)$'),
     lambda m: f'decode_head.upsamples.{m[1]}.conv.{m[2]}'),
    (re.compile(r'^expand\.2\.(.+)$'),
     lambda m: f'decode_head.conv_seg.{m[1]}'),
    # classification: AdaptiveAvgPool2d, Rearrange, Linear
    (re.compile(r'^pool\.2\.(.+)$'), lambda m: f'head.fc.{m[1]}'),
]


def _unwrap(checkpoint: Mapping) -> Dict[str, Tensor]:
    """The state dict in an authors' checkpoint (under ``'state_dict'`` or
    ``'model'``, or the checkpoint itself), ``module.`` prefixes dropped."""
    state_dict = checkpoint
    for wrapper_key in ('state_dict', 'model'):
        if isinstance(state_dict.get(wrapper_key), Mapping):
            state_dict = state_dict[wrapper_key]
    return {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state_dict.items()
    }


def wavemix_convert(checkpoint: Mapping) -> Dict[str, Tensor]:
    """Map a state dict of ``wavemix.SemSegment.WaveMix`` or
    ``wavemix.classification.WaveMix`` to this package's names.

    Segmentation weights map to an mmseg ``EncoderDecoder`` with the
    :class:`WaveMix` backbone and :class:`WaveMixHead` (``backbone.*``,
    ``decode_head.*``); classification weights to an mmpretrain
    ``ImageClassifier`` with ``LinearClsHead`` (``backbone.*``, ``head.*``).

    Args:
        checkpoint (Mapping): The authors' state dict; a dict holding it under
            ``'state_dict'`` or ``'model'``, and ``module.`` prefixes (from
            ``DataParallel``) are accepted too.

    Returns:
        dict[str, Tensor]: The converted state dict.

    Raises:
        ValueError: If a key is not a WaveMix parameter or buffer.
    """
    state_dict = _unwrap(checkpoint)
    converted = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        for pattern, rename in _RULES:
            match = pattern.match(key)
            if match:
                converted[rename(match)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f'{len(unknown)} keys are not WaveMix weights of the authors\' '
            f'package (wavemix==0.2.4), e.g. {unknown[:5]}; is this the right '
            'file?')
    if not converted:
        raise ValueError('the checkpoint holds no WaveMix weights')
    return converted


# The authors' Wave-ViT and SVT (built on Wave-ViT's code): fixed wavelet
# filter buffers (ours are not in the state dict) and the ImageNet heads
# (class attention, classifier, token-labelling head).
_WAVEVIT_FILTERS = re.compile(r'\.(dwt\.w_(ll|lh|hl|hh)|idwt\.filters)$')
_SVT_FILTERS = re.compile(r'\.(xfm|ifm)\.[gh][01][oab]$')
# theirs -> WaveViTClsHead's
_CLS_HEADS = {'post_network': 'post_network', 'head': 'fc',
              'aux_head': 'aux_fc'}
_BACKBONE = re.compile(r'^(patch_embed|block|norm)[1-9]\.')
_NORM = re.compile(r'^(?:backbone\.)?norm([1-9])\.')


def _wavevit_family_convert(checkpoint: Mapping, with_head: bool,
                            filters: re.Pattern,
                            model: str) -> Dict[str, Tensor]:
    state_dict = _unwrap(checkpoint)
    last_norm = max((int(m[1]) for m in map(_NORM.match, state_dict) if m),
                    default=None)
    converted = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(('decode_head.', 'auxiliary_head.')):
            converted[key] = value
            continue
        name = key[len('backbone.'):] if key.startswith('backbone.') else key
        if filters.search(name):
            continue
        module, rest = name.split('.', 1) if '.' in name else (name, '')
        if with_head and module in _CLS_HEADS:
            converted[f'head.{_CLS_HEADS[module]}.{rest}'] = value
        elif with_head and module == f'norm{last_norm}':
            converted[f'head.norm.{rest}'] = value
        elif module in _CLS_HEADS:
            continue
        elif _BACKBONE.match(name):
            converted[f'backbone.{name}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f'{len(unknown)} keys are not {model} weights, e.g. '
            f'{unknown[:5]}; is this the right file?')
    if not any(k.startswith('backbone.') for k in converted):
        raise ValueError(f'the checkpoint holds no {model} backbone weights')
    return converted


def wavevit_convert(checkpoint: Mapping,
                    with_head: bool = False) -> Dict[str, Tensor]:
    """Map the authors' Wave-ViT weights (github YehLi/ImageNetModel) to this
    package's names: the backbone's tensors under ``backbone.`` (their names
    are ours), their fixed wavelet filter buffers dropped, their ImageNet
    heads dropped or (``with_head``) mapped to :class:`WaveViTClsHead`; a
    segmentation checkpoint's ``decode_head.*`` and ``auxiliary_head.*``
    kept as they are (mmseg's UPerHead/FCNHead names).

    Args:
        checkpoint (Mapping): A state dict; a dict holding it under
            ``'state_dict'`` or ``'model'`` and ``module.`` prefixes are
            accepted.
        with_head (bool): For mmpretrain's ImageClassifier with
            ``WaveViT(final_norm=False)`` and ``WaveViTClsHead``: the heads
            and the last stage's norm go to ``head.``. Default: False.

    Returns:
        dict[str, Tensor]: The converted state dict.

    Raises:
        ValueError: If a key is none of the above, or there is no backbone.
    """
    return _wavevit_family_convert(checkpoint, with_head, _WAVEVIT_FILTERS,
                                   'Wave-ViT')


def svt_convert(checkpoint: Mapping,
                with_head: bool = False) -> Dict[str, Tensor]:
    """Map the authors' SVT weights (github badripatro/svt) to this
    package's :class:`ScatteringViT`, as :func:`wavevit_convert` does for
    Wave-ViT: the backbone under ``backbone.``, the DTCWT filter buffers
    (``xfm.*``, ``ifm.*``) dropped, the ImageNet heads dropped or (with
    ``with_head``) mapped to :class:`WaveViTClsHead`.

    Args:
        checkpoint (Mapping): A state dict; a dict holding it under
            ``'state_dict'`` or ``'model'`` and ``module.`` prefixes are
            accepted.
        with_head (bool): For mmpretrain's ImageClassifier with
            ``ScatteringViT(final_norm=False)`` and ``WaveViTClsHead``.
            Default: False.

    Returns:
        dict[str, Tensor]: The converted state dict.

    Raises:
        ValueError: If a key is none of the above, or there is no backbone.
    """
    return _wavevit_family_convert(checkpoint, with_head, _SVT_FILTERS, 'SVT')
