# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Train a segmentor (MMSeg's tools/train.py, with the mmseg_wavemix plugin).

Example:
    python tools/train.py configs/wavemix/wavemix_256x16_l4_cityscapes.py
    python tools/train.py CONFIG --resume   # continue from work_dir/last_checkpoint
"""
import argparse
import logging
import sys

from mmengine.logging import print_log

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.compat import mmengine_checkpoint_loading, resolve_amp
from mmseg_wavemix.utils.checks import InputError, check_segmentation_data
from mmseg_wavemix.utils.cli import add_common_args, build_runner, load_config


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
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    try:
        check_segmentation_data(cfg, ['train_dataloader', 'val_dataloader'])
    except InputError as e:
        sys.exit(f'error: {e}')

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

    cfg.resume = args.resume
    runner = build_runner(cfg)
    with mmengine_checkpoint_loading():  # torch >= 2.6 weights-only load
        runner.train()


if __name__ == '__main__':
    main()
