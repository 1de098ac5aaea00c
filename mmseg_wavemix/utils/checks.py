# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Checks that the command-line tools run before starting, so that a wrong
path or a broken file ends in one readable line, not a traceback deep in a
data loader worker (or, worse, after hours of training)."""
import os.path as osp
from typing import Iterable

import torch
from mmengine.config import Config

from mmseg_wavemix.compat import mmengine_checkpoint_loading


class InputError(RuntimeError):
    """A problem with the user's input: says what is wrong and how to fix
    it."""


def check_checkpoint(path: str) -> None:
    """Fail clearly if ``path`` is missing or not a readable checkpoint."""
    if not osp.isfile(path):
        raise InputError(f'checkpoint not found: {path}')
    try:
        with mmengine_checkpoint_loading():
            checkpoint = torch.load(path, map_location='cpu')
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise InputError(
            f'cannot read checkpoint {path}: it is truncated, corrupt or not '
            f'a PyTorch checkpoint ({type(e).__name__}: {reason[:200]})'
        ) from e
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not any(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise InputError(f'{path} holds no model weights (expected a dict of '
                         "tensors, or one under 'state_dict')")


def check_segmentation_data(cfg: Config, loaders: Iterable[str]) -> None:
    """Check the datasets of the given dataloaders of an mmseg config: the
    data root and image folder exist, images are found, and each image has
    its label map."""
    if cfg.get('default_scope', 'mmseg') != 'mmseg':
        return
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    for loader in loaders:
        dataset_cfg = cfg.get(loader, {}).get('dataset') if cfg.get(
            loader) else None
        if not dataset_cfg or 'data_root' not in dataset_cfg:
            continue
        data_root = dataset_cfg['data_root']
        hint = (f'set --cfg-options {loader}.dataset.data_root=PATH, or '
                'prepare the data (README "Data")')
        if not osp.isdir(data_root):
            raise InputError(f'{loader}: data_root {data_root} does not '
                             f'exist; {hint}')
        img_dir = osp.join(data_root,
                           dataset_cfg.get('data_prefix', {}).get(
                               'img_path', ''))
        if not osp.isdir(img_dir):
            raise InputError(f'{loader}: image folder {img_dir} does not '
                             f'exist; {hint}')
        with DefaultScope.overwrite_default_scope('mmseg'):
            dataset = DATASETS.build(
                dict(dataset_cfg, pipeline=[], lazy_init=False,
                     serialize_data=False))
        if len(dataset) == 0:
            raise InputError(
                f'{loader}: no images ending in {dataset.img_suffix!r} '
                f'found under {img_dir}')
        for info in dataset.data_list:
            seg_map = info.get('seg_map_path')
            if seg_map and not osp.isfile(seg_map):
                raise InputError(
                    f'{loader}: label map {seg_map} for image '
                    f'{info["img_path"]} is missing; for Cityscapes, create '
                    'the label maps with tools/dataset_converters/'
                    'cityscapes.py')
