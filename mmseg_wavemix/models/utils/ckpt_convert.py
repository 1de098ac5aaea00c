# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the authors' WaveMix weights (pip ``wavemix==0.2.4``) to ours."""
import re
from collections import OrderedDict
from typing import Dict, Mapping

from torch import Tensor

# Sub-modules of the authors' per-level nn.Sequential "feedforward":
# 0 conv, 1 GELU, 2 Dropout, 3 conv, 4 ConvTranspose2d, 5 BatchNorm2d.
_LEVEL_MLP_LAYERS = {'0': 'fc1', '3': 'fc2', '4': 'upsample', '5': 'bn'}

_RULES = [
    # stem (both the strided and the patchify stem keep their indices)
    (re.compile(r'^conv\.(\d+)\.(.+)$'), lambda m: f'backbone.stem.{m[1]}.{m[2]}'),
    (re.compile(r'^layers\.(\d+)\.reduction\.(.+)$'),
     lambda m: f'backbone.layers.{m[1]}.reduction.{m[2]}'),
    # Level1Waveblock's unit is "feedforward", LevelkWaveblock's "feedforwardk"
    (re.compile(r'^layers\.(\d+)\.feedforward(\d?)\.([0345])\.(.+)$'),
     lambda m: (f'backbone.layers.{m[1]}.mlps.{int(m[2] or 1) - 1}.'
                f'{_LEVEL_MLP_LAYERS[m[3]]}.{m[4]}')),
    # segmentation decoder: two ConvTranspose2d then the 1x1 classifier
    (re.compile(r'^expand\.([01])\.(.+)$'),
     lambda m: f'decode_head.upsamples.{m[1]}.conv.{m[2]}'),
    (re.compile(r'^expand\.2\.(.+)$'), lambda m: f'decode_head.conv_seg.{m[1]}'),
    # classification: AdaptiveAvgPool2d, Rearrange, Linear
    (re.compile(r'^pool\.2\.(.+)$'), lambda m: f'head.fc.{m[1]}'),
]


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
    state_dict = checkpoint
    for wrapper_key in ('state_dict', 'model'):
        if isinstance(state_dict.get(wrapper_key), Mapping):
            state_dict = state_dict[wrapper_key]
    converted = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
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
