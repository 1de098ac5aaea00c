# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Checkpoint files for the tools: reading them (weights only, mmengine's
types allowed), saving converted weights, and whether a checkpoint fits the
model of a config, checked before any evaluation, fine-tuning
(``load_from``, an ``init_cfg``'s ``Pretrained`` checkpoint) or
``--resume``, so that a checkpoint of another model stops with one line
instead of loading partly (mmengine only warns) and reporting a meaningless
score. A checkpoint in the names of the authors' code is named as such, with
the converter to run."""
import logging
import os
import os.path as osp
from functools import partial
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Tuple)

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn

from mmseg_wavemix.compat import mmengine_checkpoint_loading
from mmseg_wavemix.models.utils import (svt_convert, wavemix_convert,
                                        wavevit_convert)

from .checks import InputError, describe, tool_path

MAX_KEYS_NAMED = 3

# The authors' layouts that tools/convert_*_weights.py read: whose code,
# the conversion, and its command line (the tool and its option).
AUTHORS_CONVERSIONS = (
    ("the WaveMix authors' package (wavemix==0.2.4)", wavemix_convert,
     'convert_wavemix_weights.py', ''),
    ("the Wave-ViT authors' code", partial(wavevit_convert, with_head=False),
     'convert_wavevit_weights.py', ''),
    ("the Wave-ViT authors' code", partial(wavevit_convert, with_head=True),
     'convert_wavevit_weights.py', ' --with-head'),
    ("the SVT authors' code", partial(svt_convert, with_head=False),
     'convert_svt_weights.py', ''),
    ("the SVT authors' code", partial(svt_convert, with_head=True),
     'convert_svt_weights.py', ' --with-head'),
)


def read_checkpoint(path: str) -> Any:
    """What ``path`` holds (weights only: tensors, containers and the types
    mmengine writes into its checkpoints); a clear error if it is missing or
    unreadable."""
    if not osp.isfile(path):
        raise InputError(f'checkpoint not found: {path}')
    try:
        with mmengine_checkpoint_loading():
            return torch.load(path, map_location='cpu')
    except Exception as e:
        raise InputError(
            f'cannot read checkpoint {path}: it is truncated, corrupt or not '
            f'a PyTorch checkpoint ({describe(e)[:250]})') from e


def save_converted(state_dict: Dict[str, torch.Tensor], src: str,
                   dst: str) -> None:
    """Save converted weights as a checkpoint that ``load_from``,
    ``init_cfg=Pretrained`` and tools/test.py read."""
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=dict(converted_from=src)),
               dst)
    print(f'converted {len(state_dict)} tensors: {dst}')


def convert_file(src: str, dst: str,
                 convert: Callable[[dict], Dict[str, torch.Tensor]],
                 model: str) -> None:
    """Read the authors' checkpoint ``src``, map it with ``convert`` (which
    raises ValueError for what is not ``model``'s) and save the result to
    ``dst``; an InputError naming ``src`` otherwise."""
    checkpoint = read_checkpoint(src)
    if not isinstance(checkpoint, dict):
        raise InputError(f'{src} holds a {type(checkpoint).__name__}, not '
                         f'a {model} state dict')
    try:
        state_dict = convert(checkpoint)
    except ValueError as e:
        raise InputError(f'{src}: {e}') from e
    save_converted(state_dict, src, dst)


def load_state_dict(path: str,
                    drop_ddp_prefix: bool = True) -> Dict[str, torch.Tensor]:
    """The weights in ``path``: its ``state_dict``, or the file itself if it
    is a plain state dict; a clear error if it is missing, unreadable or
    holds no tensors. ``drop_ddp_prefix``: without DDP's ``module.``, as
    mmengine loads a checkpoint into a model (not when it selects a
    prefix)."""
    return state_dict_of(read_checkpoint(path), path, drop_ddp_prefix)


def state_dict_of(checkpoint: Any,
                  path: str,
                  drop_ddp_prefix: bool = True) -> Dict[str, torch.Tensor]:
    """:func:`load_state_dict` of a checkpoint already read from ``path``."""
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not any(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        # e.g. the SVT authors' {'model': ..., 'epoch': ...}
        conversion = isinstance(checkpoint, dict) and authors_conversion(
            checkpoint, path)
        raise InputError(f'{path} holds no model weights (expected a dict of '
                         "tensors, or one under 'state_dict')" +
                         (f'; {conversion}' if conversion else ''))
    weights = {
        k: v
        for k, v in state_dict.items() if isinstance(v, torch.Tensor)
    }
    if not drop_ddp_prefix:
        return weights
    return {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in weights.items()
    }


def trained_classes(checkpoint: Any) -> Optional[Tuple[str, ...]]:
    """The classes of the dataset that an mmengine checkpoint was trained on
    (its ``meta.dataset_meta``), or None where it does not say."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) \
        else None
    classes = dataset_meta.get('classes') if isinstance(
        dataset_meta, dict) else None
    return tuple(classes) if isinstance(classes, (list, tuple)) else None


def compare(model: nn.Module, state_dict: Dict[str, torch.Tensor]
            ) -> Tuple[List[str], List[Tuple[str, tuple, tuple]]]:
    """The model's tensors missing from ``state_dict``, and those there with
    another shape: ``(key, checkpoint shape, model shape)``."""
    missing, mismatched = [], []
    for key, tensor in model.state_dict().items():
        if key not in state_dict:
            missing.append(key)
        elif state_dict[key].shape != tensor.shape:
            mismatched.append((key, tuple(state_dict[key].shape),
                               tuple(tensor.shape)))
    return missing, mismatched


def _fitting(keys: set, names: Iterable[str]) -> int:
    """How many of a model's ``keys`` are among ``names``, as they stand or
    as a backbone's own (``backbone.`` taken off: an init_cfg's prefix)."""
    names = set(names)
    return max(
        len(keys & names),
        len(keys & {n[len('backbone.'):]
                    for n in names if n.startswith('backbone.')}))


def authors_conversion(checkpoint: Mapping,
                       path: str,
                       model: Optional[nn.Module] = None) -> Optional[str]:
    """What to run if ``checkpoint`` holds weights in the names of the
    authors' code (WaveMix's package, Wave-ViT's, SVT's): the converter's
    command line, or None.

    Args:
        checkpoint (Mapping): A state dict, or a checkpoint holding one.
        path (str): Its file, for the command line.
        model (nn.Module, optional): The model (or module) to load it into:
            only a conversion that makes more of its tensors fit counts, and
            the best one is named. Default: None (any that converts and
            renames). A file in our names (a model's, or a backbone's own
            without ``backbone.``) gives None.

    Returns:
        str or None: e.g. ``"it holds weights in the names of the WaveMix
        authors' package (wavemix==0.2.4): convert it first, python
        tools/convert_wavemix_weights.py PATH OUT"``.
    """
    keys = set(model.state_dict()) if model is not None else set()
    baseline, best = _fitting(keys, checkpoint), None
    for source, convert, tool, option in AUTHORS_CONVERSIONS:
        try:
            converted = set(convert(checkpoint))
        except (ValueError, AttributeError, TypeError):
            continue  # not this layout
        if converted in (set(checkpoint),
                         {f'backbone.{k}' for k in checkpoint}):
            return None  # ours: a model's or a backbone's own
        fit = _fitting(keys, converted)
        # Wave-ViT's and SVT's converters read each other's files: the
        # right one also drops its own filter buffers, leaving fewer others
        score = (fit, -len(converted - keys))
        if (model is None or fit > baseline) and (best is None
                                                  or score > best[0]):
            best = (score, source, tool, option)
    if best is None:
        return None
    _, source, tool, option = best
    return (f'it holds weights in the names of {source}: convert it first, '
            f'python {tool_path(tool)} {path} OUT{option}')


def _likely_cause(model: nn.Module, state_dict: dict, missing: list,
                  mismatched: list, path: str) -> str:
    conversion = authors_conversion(state_dict, path, model)
    if conversion:
        return conversion
    keys = model.state_dict().keys()
    with_prefix = {f'backbone.{k}' for k in state_dict}
    if missing and all(k in with_prefix for k in missing
                       if k.startswith('backbone.')) and not any(
                           k.startswith('backbone.') for k in state_dict):
        return ("its keys lack the 'backbone.' prefix (a backbone's own "
                'state dict): set the backbone\'s init_cfg=dict('
                "type='Pretrained', checkpoint=PATH) instead")
    if missing and not mismatched and all(
            not k.startswith('backbone.') for k in missing) and any(
                k.startswith('backbone.') for k in keys):
        return ('it holds the backbone only (no decode head): to fine-tune '
                'from it, load it with --strict-load false')
    if mismatched and all(
            k.endswith('.complex_weight_ll') for k, _, _ in mismatched):
        key, ckpt, ours = mismatched[0]
        return (f'it was made for another img_size (SVT\'s low-pass '
                f'filters are {ckpt[1]}x{ckpt[2]} there, {ours[1]}x{ours[2]} '
                'in the model): set the backbone\'s img_size to '
                f'({4 * ckpt[1]}, {4 * ckpt[2]}), which gives these filters; '
                'the model still takes any input size')
    if mismatched and all(
            k.startswith(('decode_head.', 'auxiliary_head.', 'head.'))
            for k, _, _ in mismatched):
        key, ckpt, ours = mismatched[0]
        return (f'it was trained for another number of classes ({ckpt[0]} '
                f'in {key}, the config has {ours[0]}): set num_classes to '
                'match, or fine-tune with --strict-load false')
    return ('it was trained with another config (e.g. other embed_dims, '
            'depth or level); use the config it was trained with')


def check_fits(model: nn.Module,
               state_dict: Dict[str, torch.Tensor],
               path: str,
               strict: bool = True,
               cause: Optional[str] = None,
               target: str = 'the model of this config') -> None:
    """Stop with one line if ``state_dict`` lacks a tensor of ``model`` or
    has one of another shape; with ``strict=False`` say what will load.

    Args:
        model (nn.Module): The model built from the config.
        state_dict (dict): From :func:`load_state_dict`.
        path (str): The checkpoint's path, for the message.
        strict (bool): Stop on a mismatch (else log what loads and what
            does not). Default: True.
        cause (str, optional): What the message gives as the cause.
            Default: None (guessed from the keys).
        target (str): What ``model`` is, for the message. Default: 'the
            model of this config'.
    """
    missing, mismatched = compare(model, state_dict)
    if not missing and not mismatched:
        return
    total = len(model.state_dict())
    problems = []
    if mismatched:
        named = ', '.join(f'{k} {list(c)} in the checkpoint, {list(m)} in '
                          'the model'
                          for k, c, m in mismatched[:MAX_KEYS_NAMED])
        problems.append(f'{len(mismatched)} tensors have another shape '
                        f'({named}{", ..." if len(mismatched) > 3 else ""})')
    if missing:
        named = ', '.join(missing[:MAX_KEYS_NAMED])
        problems.append(f'{len(missing)} of {total} tensors are '
                        f'missing ({named}'
                        f'{", ..." if len(missing) > 3 else ""})')
    summary = ' and '.join(problems)
    if strict:
        cause = cause or _likely_cause(model, state_dict, missing,
                                       mismatched, path)
        raise InputError(f'checkpoint {path} does not fit {target}: '
                         f'{summary}; {cause}')
    loaded = total - len(missing) - len(mismatched)
    print_log(
        f'--strict-load false: loading {loaded} of {total} tensors of '
        f'{target} from {path}; not loaded: {summary}',
        logger='current',
        level=logging.WARNING)


def pretrained_inits(
        model: nn.Module) -> Iterator[Tuple[str, nn.Module, dict]]:
    """The modules of ``model`` whose ``init_cfg`` loads a local checkpoint
    (``type='Pretrained'``; a URL is mmengine's to download) through
    mmengine's ``BaseModule.init_weights`` (a module with an
    ``init_weights`` of its own, as mmseg's Swin and ViT, reads its file its
    own way): each with its name and that init_cfg."""
    for name, module in model.named_modules():
        if getattr(type(module), 'init_weights',
                   None) is not BaseModule.init_weights:
            continue
        init_cfgs = getattr(module, 'init_cfg', None)
        for init_cfg in init_cfgs if isinstance(init_cfgs,
                                                list) else [init_cfgs]:
            if isinstance(init_cfg, Mapping) and init_cfg.get(
                    'type') == 'Pretrained' and init_cfg.get(
                        'checkpoint') and '://' not in str(
                            init_cfg['checkpoint']):
                yield name or 'model', module, init_cfg


def check_init_checkpoints(model: nn.Module, strict: bool = True) -> None:
    """Before training from the checkpoints of ``init_cfg=dict(
    type='Pretrained', ...)``: each file is there and readable, holds
    tensors under the init_cfg's ``prefix``, and what it holds there fits
    its module, as :func:`check_fits` says (mmengine loads it with
    ``strict=False``: a file of another model only warns, and training
    starts from random weights).

    Args:
        model (nn.Module): A model built from the config for the checks:
            the checkpoints are loaded into it as training will.
        strict (bool): Stop where a checkpoint does not fit (else log what
            loads). Default: True.
    """
    for name, module, init_cfg in pretrained_inits(model):
        path = str(init_cfg['checkpoint'])
        target = f"the {name} (its init_cfg's checkpoint)"
        prefix = init_cfg.get('prefix')
        # what mmengine's PretrainedInit reads
        state_dict = load_state_dict(path, drop_ddp_prefix=not prefix)
        if prefix:
            prefix = prefix if prefix.endswith('.') else f'{prefix}.'
            held = {k[len(prefix):]: v for k, v in state_dict.items()
                    if k.startswith(prefix)}
            if not held:
                missing, mismatched = compare(module, state_dict)
                cause = (f"its keys are the {name}'s own: leave the prefix "
                         'out' if not missing and not mismatched else
                         authors_conversion(state_dict, path, module)
                         or "set the init_cfg's prefix to what its keys "
                         f"start with, or leave it out for the {name}'s "
                         'own state dict')
                raise InputError(f'checkpoint {path} holds no tensors under '
                                 f"the prefix {prefix!r} of the {name}'s "
                                 f'init_cfg; {cause}')
            state_dict = held
        try:
            # as mmengine will: through the module's own loading, which may
            # adapt a tensor (SVT resizes ImageNet's low-pass filters)
            if not module.load_state_dict(state_dict,
                                          strict=False).missing_keys:
                continue
        except RuntimeError:
            pass  # another shape: named below
        cause = authors_conversion(state_dict, path, module)
        if cause is None and not prefix and any(
                k.startswith('backbone.') for k in state_dict):
            cause = ("its keys start with 'backbone.': set the init_cfg's "
                     "prefix='backbone.'")
        check_fits(module, state_dict, path, strict,
                   cause or ('it holds the weights of another model or '
                             'size; to fine-tune from what fits, use '
                             '--strict-load false'), target)
