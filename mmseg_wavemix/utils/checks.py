# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Checks that the command-line tools run before starting, so that a wrong
path or a broken file ends in one readable line, not a traceback deep in a
data loader worker (or, worse, after hours of training). The checkpoint
checks are in :mod:`.checkpoints`."""
import logging
import os
import os.path as osp
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log
from PIL import Image

# Label maps whose values are checked by default (evenly spread over the
# set); `full` checks every one.
LABEL_SAMPLE = 20
LABEL_CHECKS = ('sample', 'full', 'off')
PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


class InputError(RuntimeError):
    """A problem with the user's input: says what is wrong and how to fix
    it."""


def describe(error: BaseException) -> str:
    """``'Type: first line of the message'``, for one-line reports."""
    text = str(error).strip()
    return f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'


def package_file(relative: str, package_dir: str = PACKAGE_DIR) -> str:
    """A package's ``configs/...`` or ``tools/...`` file: in its ``.mim``
    folder, where a wheel carries them (setup.py), or next to the package in
    its source checkout (an editable install)."""
    installed = osp.join(package_dir, '.mim', relative)
    checkout = osp.join(osp.dirname(package_dir), relative)
    return checkout if not osp.exists(installed) and osp.exists(
        checkout) else installed


def tool_path(name: str) -> str:
    """Our ``tools/{name}`` as a message names it: relative to the working
    directory where it lies under it (``tools/x.py`` in the checkout), else
    in full (an installed package's)."""
    path = package_file(osp.join('tools', name))
    relative = osp.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def check_segmentation_data(
        cfg: Config,
        loaders: Iterable[str],
        labels: str = 'sample',
        model: Optional[object] = None,
        trained_classes: Optional[Sequence[str]] = None) -> None:
    """Check the datasets of the given dataloaders of an mmseg config: the
    data root and image folder exist, images are found, each image has its
    label map, and (unless ``labels='off'``) the label maps fit (see
    :func:`check_label_maps`) and so does the model: each of its decode
    heads predicts the dataset's classes, the ones it was trained on.

    Args:
        cfg (Config): The config.
        loaders (Iterable[str]): e.g. ``['train_dataloader']``.
        labels (str): ``'sample'`` (sizes of all, values of a sample),
            ``'full'`` (values of all) or ``'off'``. Default: 'sample'.
        model (nn.Module, optional): The config's model, built. Default:
            None (its heads are not checked).
        trained_classes (Sequence[str], optional): The classes of the
            dataset the weights to test were trained on, in order (their
            checkpoint's ``meta.dataset_meta``). Default: None (unknown).
    """
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
                    'the label maps with '
                    f'{tool_path("dataset_converters/cityscapes.py")}')
        if labels != 'off':
            if model is not None:
                check_head_classes(loader, dataset, model)
            if trained_classes is not None:
                check_trained_classes(loader, dataset, trained_classes)
            ignore_index = cfg.model.get('decode_head', {}).get(
                'ignore_index', 255)
            check_label_maps(loader, dataset, ignore_index, labels == 'full')


def head_classes(model) -> Dict[str, int]:
    """The classes each decode head of an mmseg segmentor predicts, by its
    place in the config (``model.decode_head``, ``model.auxiliary_head.1``,
    ...)."""
    found = {}
    for name in ('decode_head', 'auxiliary_head'):
        heads = getattr(model, name, None)
        if heads is None:
            continue
        if hasattr(heads, 'num_classes'):
            found[f'model.{name}'] = heads.num_classes
        else:  # a ModuleList (cascade or several auxiliary heads)
            for i, head in enumerate(heads):
                if hasattr(head, 'num_classes'):
                    found[f'model.{name}.{i}'] = head.num_classes
    return found


def check_head_classes(loader: str, dataset, model) -> None:
    """Each decode head predicts the classes of ``dataset``: one with fewer
    would fail at the first label beyond them, so that stops here; one with
    more (as the authors' 20-class Cityscapes WaveMix) gets a warning: its
    extra classes get no labels, and mmseg's metrics count their
    predictions as wrong."""
    classes = len(dataset.metainfo['classes'])
    for key, num_classes in head_classes(model).items():
        fix = (f'set --cfg-options {key}.num_classes={classes} (each head), '
               "or give the dataset the model's classes (metainfo=dict("
               'classes=...))')
        if num_classes < classes:
            raise InputError(
                f'{key}.num_classes is {num_classes}, but {loader} holds '
                f'{type(dataset).__name__} of {classes} classes; {fix}')
        if num_classes > classes:
            print_log(
                f'{loader}: {key}.num_classes is {num_classes}, but '
                f'{type(dataset).__name__} has {classes} classes: classes '
                f'{classes}..{num_classes - 1} get no labels, and the '
                'metrics count their predictions as wrong; unless on '
                f'purpose, {fix}',
                logger='current', level=logging.WARNING)


def check_trained_classes(loader: str, dataset,
                          trained_classes: Sequence[str]) -> None:
    """The dataset has the classes the weights were trained on, in their
    order: else class k's predictions would be scored as another class,
    without a word."""
    classes = tuple(dataset.metainfo['classes'])
    if classes == tuple(trained_classes):
        return
    k = next((i for i, (a, b) in enumerate(zip(trained_classes, classes))
              if a != b), min(len(classes), len(trained_classes)))
    trained = trained_classes[k] if k < len(trained_classes) else 'none'
    has = classes[k] if k < len(classes) else 'none'
    raise InputError(
        f'{loader}: the checkpoint was trained on {len(trained_classes)} '
        f'classes, {type(dataset).__name__} has {len(classes)}, and they '
        f'differ at class {k}: {trained!r} in the checkpoint, {has!r} in '
        'the dataset; test on the classes the model was trained on '
        "(the dataset's metainfo=dict(classes=...)), or --check-labels off "
        'to score it as it is')


def check_label_packing(cfg: Config) -> None:
    """A training pipeline that packs uint8 label maps
    (``PackSegInputsUint8``) needs a data preprocessor that makes them int64
    on the device (``SegDataPreProcessorUint8``): mmseg's losses take int64
    labels only, and would fail at the first step with a type error."""
    if cfg.get('default_scope', 'mmseg') != 'mmseg' or not has_transform(
            cfg.get('train_dataloader', {}).get('dataset'),
            'PackSegInputsUint8'):
        return
    from mmseg.registry import MODELS

    from mmseg_wavemix.models import SegDataPreProcessorUint8
    kind = (cfg.model.get('data_preprocessor') or {}).get('type')
    found = MODELS.get(kind) if isinstance(kind, str) else kind
    if not (isinstance(found, type)
            and issubclass(found, SegDataPreProcessorUint8)):
        raise InputError(
            'train_dataloader packs its label maps as uint8 '
            "(PackSegInputsUint8), but the model's data_preprocessor "
            f'({kind}) would hand them to the losses as uint8, and they '
            "take int64: set model.data_preprocessor.type="
            "'SegDataPreProcessorUint8', or pack with mmseg's "
            'PackSegInputs')


def is_type(entry, name: str) -> bool:
    """Whether the config entry ``entry`` builds the class ``name`` (given
    by name, with or without a scope, or as the class)."""
    kind = entry.get('type') if isinstance(entry, dict) else None
    return getattr(kind, '__name__', str(kind)).rsplit('.', 1)[-1] == name


def transforms_of(dataset_cfg, name: str) -> list:
    """The transforms of that type in a dataset config (wrapped datasets
    included)."""
    if isinstance(dataset_cfg, dict):
        found = [dataset_cfg] if is_type(dataset_cfg, name) else []
        return found + [t for v in dataset_cfg.values()
                        for t in transforms_of(v, name)]
    if isinstance(dataset_cfg, (list, tuple)):
        return [t for v in dataset_cfg for t in transforms_of(v, name)]
    return []


def has_transform(dataset_cfg, name: str) -> bool:
    """Whether a dataset config (wrapped datasets included) has a transform
    of that type."""
    return bool(transforms_of(dataset_cfg, name))


def check_crop_size(cfg: Config) -> None:
    """Warns where the config's ``crop_size`` is not the crop that training
    takes: a config's variable reaches only what that file defines (a base
    config read its own ``crop_size`` when it was parsed), so a config that
    sets ``crop_size`` alone changes nothing."""
    crop_size = cfg.get('crop_size')
    if crop_size is None or cfg.get('default_scope', 'mmseg') != 'mmseg':
        return
    crops = [("train_dataloader's RandomCrop crops", t['crop_size'])
             for t in transforms_of(
                 cfg.get('train_dataloader', {}).get('dataset'),
                 'RandomCrop') if 'crop_size' in t]
    size = (cfg.get('model', {}).get('data_preprocessor') or {}).get('size')
    if size is not None:
        crops.append(('model.data_preprocessor pads to', size))
    wrong = [f'{what} {tuple(value)}' for what, value in crops
             if tuple(value) != tuple(crop_size)]
    if wrong:
        print_log(
            f'crop_size = {tuple(crop_size)}, but {" and ".join(wrong)}: a '
            'config variable reaches only what its own file defines (the '
            'base configs read theirs); redefine train_pipeline and '
            "data_preprocessor with it (as this project's "
            'configs/wavemix_decoders/*.py do)',
            logger='current', level=logging.WARNING)


def check_label_maps(loader: str, dataset, ignore_index: int = 255,
                     full: bool = False) -> None:
    """Every label map has its image's size (read from the file headers)
    and one channel; the values of a sample of them (all if ``full``) are
    train ids (``0..num_classes - 1``; ``0..num_classes`` with
    ``reduce_zero_label``, whose 0 is ignored) or ``ignore_index``. The
    first bad file is named. Grayscale and RGBA images are accepted (read as
    color) with a note."""
    infos = [i for i in dataset.data_list if i.get('seg_map_path')]
    noted = False
    for info in infos:
        image_size, image_mode = _header(info['img_path'])
        label_size, label_mode = _header(info['seg_map_path'])
        if image_size != label_size:
            raise InputError(
                f'{loader}: label map {info["seg_map_path"]} is '
                f'{label_size[1]}x{label_size[0]} but its image '
                f'{info["img_path"]} is {image_size[1]}x{image_size[0]}; '
                'make the label maps from the images they belong to')
        if label_mode not in ('L', 'P', 'I', 'I;16'):
            raise InputError(
                f'{loader}: label map {info["seg_map_path"]} is {label_mode}, '
                'not one channel of train ids (a *_color.png instead of '
                '*_labelTrainIds.png?)')
        if image_mode != 'RGB' and not noted:
            noted = True
            print_log(
                f'{loader}: note: {info["img_path"]} is {image_mode}; it is '
                'read as a 3-channel color image (mmcv\'s default)',
                logger='current', level=logging.WARNING)
    num_classes = len(dataset.metainfo['classes'])
    highest = num_classes if dataset.reduce_zero_label else num_classes - 1
    step = 1 if full else max(1, len(infos) // LABEL_SAMPLE)
    for info in infos[::step]:
        with Image.open(info['seg_map_path']) as label:
            values = np.unique(np.asarray(label))
        bad = values[(values > highest) & (values != ignore_index)]
        if bad.size:
            raise InputError(
                f'{loader}: label map {info["seg_map_path"]} holds the value '
                f'{int(bad[0])}, which is neither a class (0..{highest}) nor '
                f'the ignore index {ignore_index}; convert the labels to '
                'train ids (Cityscapes: '
                f'{tool_path("dataset_converters/cityscapes.py")})')


def _header(path: str) -> Tuple[Tuple[int, int], str]:
    """``(width, height)`` and PIL mode of the image at ``path``, from its
    header."""
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except Exception as e:
        raise InputError(f'cannot read image {path}: {type(e).__name__}: '
                         f'{e}') from e
