# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Train a segmentor (MMSeg's tools/train.py, with the mmseg_wavemix plugin).

Example:
    python tools/train.py configs/wavemix/wavemix_256x16_l4_cityscapes.py
    # continue from work_dir/last_checkpoint:
    python tools/train.py CONFIG --resume
    # on a GPU, the training step replayed as CUDA graphs (or not):
    python tools/train.py CONFIG --cuda-graphs
    python tools/train.py CONFIG --no-cuda-graphs
"""
import argparse
import logging

from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.compat import mmengine_checkpoint_loading, resolve_amp
from mmseg_wavemix.utils.checkpoints import (check_fits,
                                             check_init_checkpoints,
                                             load_state_dict)
from mmseg_wavemix.utils.checks import (InputError, check_crop_size,
                                        check_label_packing,
                                        check_segmentation_data, is_type)
from mmseg_wavemix.utils.cli import (add_check_args, add_common_args,
                                     build_runner, check_model,
                                     expandable_segments_for_graphs,
                                     load_config, request_training_graphs,
                                     run_with_one_line_errors)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (needs CUDA; fp32 '
        'with a warning otherwise, also for AMP configs)')
    parser.add_argument(
        '--cuda-graphs',
        action=argparse.BooleanOptionalAction,
        help="replay the training forward and backward as CUDA graphs "
        "(FastTrainingHook's cuda_graphs; the WaveMix Cityscapes recipe's "
        'default): faster steps on a GPU for more memory; one crop size, '
        'one process; nothing on CPU. --no-cuda-graphs trains without them. '
        "Default: the config's")
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help="scale the learning rates linearly from the config's "
        'auto_scale_lr.base_batch_size (the total batch they are for) to '
        "this run's (processes x train_dataloader.batch_size)")
    add_common_args(parser)
    add_check_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    run_with_one_line_errors(train, parse_args(argv))


def check_start(cfg, args) -> bool:
    """Everything checked before the runner starts (and prints the config):
    the model builds, its data preprocessor takes the labels as the
    pipeline packs them, the crop size reaches the pipeline (a warning), the
    data is there and fits, and so do the heads' classes, and the checkpoint
    to resume or fine-tune from fits the model. Returns whether ``--resume``
    finds nothing to resume."""
    model = check_model(cfg)
    check_label_packing(cfg)
    check_crop_size(cfg)
    check_segmentation_data(cfg, ['train_dataloader', 'val_dataloader'],
                            args.check_labels, model)
    if args.resume:
        # what mmengine resumes from: load_from, else the work_dir's latest
        checkpoint = cfg.get('load_from') or find_latest_checkpoint(
            cfg.work_dir)
        if checkpoint is None:
            return True
        check_fits(
            model,
            load_state_dict(checkpoint),
            checkpoint,
            cause='the config changed since it was saved, and --resume '
            'continues the same run: undo the change, or train in a new '
            '--work-dir')
    elif cfg.get('load_from'):
        check_fits(
            model,
            load_state_dict(cfg.load_from),
            cfg.load_from,
            strict=args.strict_load == 'true')
    else:  # the weights come from the init_cfgs
        check_init_checkpoints(model, strict=args.strict_load == 'true')
    return False


def check_total_batch(cfg, world_size: int) -> None:
    """Warns where the run trains on another total batch than the one the
    config's learning rates are for, without scaling them."""
    auto_scale_lr = cfg.get('auto_scale_lr') or {}
    base = auto_scale_lr.get('base_batch_size')
    batch = cfg.train_dataloader.batch_size
    if base is None or auto_scale_lr.get('enable') or \
            world_size * batch == base:
        return
    print_log(
        f'The learning rates are for a total batch of {base} '
        f'(auto_scale_lr.base_batch_size); this run trains on '
        f'{world_size * batch} ({world_size} process(es) x {batch}) with '
        'them unscaled; --auto-scale-lr scales them by '
        f'{world_size * batch}/{base}',
        logger='current',
        level=logging.WARNING)


def is_mmengine_iter_loop(train_cfg) -> bool:
    """Whether ``train_cfg`` builds mmengine's ``IterBasedTrainLoop``
    (by name, or as the runner's default for ``by_epoch=False``)."""
    if 'type' not in train_cfg:
        return train_cfg.get('by_epoch') is False
    return is_type(train_cfg, 'IterBasedTrainLoop')


def train(args):
    cfg = load_config(args)
    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise InputError(
                '--auto-scale-lr: the config does not say the total batch '
                'its learning rates are for; add auto_scale_lr = dict('
                'base_batch_size=N)')
        cfg.auto_scale_lr.enable = True
    nothing_to_resume = check_start(cfg, args)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        elif optim_wrapper != 'OptimWrapper':
            raise ValueError('--amp is only supported when the optimizer '
                             'wrapper type is OptimWrapper, got '
                             f'{optim_wrapper!r}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.optim_wrapper = resolve_amp(cfg.optim_wrapper)
    if args.cuda_graphs is not None:
        request_training_graphs(cfg, on=args.cuda_graphs)
    expandable_segments_for_graphs(cfg)

    cfg.resume = args.resume
    runner = build_runner(cfg)
    if not args.resume or nothing_to_resume:  # else the checkpoint's rates
        check_total_batch(cfg, runner.world_size)
    if nothing_to_resume:
        print_log(
            f'--resume: no checkpoint in {cfg.work_dir} to resume from '
            '(no last_checkpoint there); training starts from scratch',
            logger='current',
            level=logging.WARNING)
    elif args.resume and is_mmengine_iter_loop(cfg.get('train_cfg') or {}):
        print_log(
            "--resume: mmengine's IterBasedTrainLoop loads every batch "
            'already trained on again before the next step (and, without '
            'randomness.seed, draws another order of images); '
            "train_cfg.type='FastResumeIterBasedTrainLoop' moves the "
            'sampler past them instead',
            logger='current',
            level=logging.WARNING)
    with mmengine_checkpoint_loading():  # torch >= 2.6 weights-only load
        runner.train()


if __name__ == '__main__':
    main()
