# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The authors' WaveMix (PyPI ``wavemix==0.2.4``) next to ours, for
benchmarks and parity checks. The package is not a dependency: install it
apart from the environment, e.g.::

    pip install --no-deps --target work_dirs/authors_wavemix \
        wavemix==0.2.4 einops

and pass that directory to :func:`import_authors_segmenter`.
"""
import importlib
import sys
import types
from typing import Optional

import numpy as np
import torch.nn as nn
from mmengine.config import ConfigDict

AUTHORS_PACKAGE = 'wavemix==0.2.4'


def import_authors_segmenter(path: Optional[str] = None) -> type:
    """Import the authors' segmentation model class
    (``wavemix.SemSegment.WaveMix``).

    Args:
        path (str, optional): Directory holding the ``wavemix`` package (a
            ``pip install --target`` directory). Default: None (the current
            environment).

    Returns:
        type: The model class.
    """
    if path and path not in sys.path:
        sys.path.insert(0, path)
    # wavemix 0.2.4 imports hamming from a numpy module that numpy 2 removed.
    try:
        importlib.import_module('numpy.lib.function_base')
    except ImportError:
        shim = types.ModuleType('numpy.lib.function_base')
        shim.hamming = np.hamming
        sys.modules['numpy.lib.function_base'] = shim
    try:
        from wavemix.SemSegment import WaveMix
    except ImportError as e:
        raise ImportError(
            f"the authors' package ({AUTHORS_PACKAGE}) is not importable"
            f'{" from " + path if path else ""}: {e}. Install it apart from '
            f'this environment with `pip install --no-deps --target DIR '
            f'{AUTHORS_PACKAGE} einops` and pass DIR') from e
    return WaveMix


def build_authors_segmenter(model_cfg: ConfigDict,
                            path: Optional[str] = None) -> nn.Module:
    """Build the authors' model with the sizes of one of our WaveMix
    segmentor configs (``cfg.model``), so that weights converted with
    :func:`mmseg_wavemix.models.utils.wavemix_convert` give the same
    outputs in both.

    Args:
        model_cfg (ConfigDict): An ``EncoderDecoder`` with a ``WaveMix``
            backbone (strided stem) and a ``WaveMixHead``.
        path (str, optional): See :func:`import_authors_segmenter`.

    Returns:
        nn.Module: ``wavemix.SemSegment.WaveMix``; ``forward(images)`` returns
        logits at the input resolution.
    """
    backbone, head = model_cfg.backbone, model_cfg.decode_head
    if backbone.get('type') != 'WaveMix' or head.get('type') != \
            'WaveMixHead' or backbone.get('stem_type', 'strided') != 'strided':
        raise ValueError(
            "the authors' segmentation model corresponds to a WaveMix "
            'backbone with the strided stem and a WaveMixHead; got backbone '
            f"{backbone.get('type')} and head {head.get('type')}")
    embed_dims = backbone.get('embed_dims', 256)
    authors_model = import_authors_segmenter(path)
    return authors_model(
        num_classes=head.num_classes,
        depth=backbone.get('depth', 16),
        mult=backbone.get('mlp_ratio', 2),
        ff_channel=backbone.get('ff_channels') or embed_dims,
        final_dim=embed_dims,
        dropout=backbone.get('dropout', 0.),
        level=backbone.get('level', 4),
        stride=backbone.get('stem_stride', 2))
