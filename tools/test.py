# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Test (and evaluate) a model: MMSeg's tools/test.py with the plugin.

Segmentation configs (``default_scope='mmseg'``) behave as in MMSeg;
classification configs (``default_scope='mmpretrain'``) as mmpretrain's
tools/test.py: ``--out`` dumps the predictions to a pickle file and
``--show-dir`` saves the drawn images.

Example:
    python tools/test.py CONFIG CHECKPOINT --show-dir vis
"""
import argparse

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.compat import mmengine_checkpoint_loading
from mmseg_wavemix.utils.checkpoints import (check_fits, read_checkpoint,
                                             state_dict_of, trained_classes)
from mmseg_wavemix.utils.checks import check_segmentation_data
from mmseg_wavemix.utils.cli import (add_check_args, add_common_args,
                                     build_runner, check_model, load_config,
                                     run_with_one_line_errors)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        type=str,
        help='segmentation: the directory to save output prediction for '
        'offline evaluation; classification: a .pkl file to dump them to')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--show-interval',
        type=int,
        default=1,
        help='draw every N-th image with --show/--show-dir (default: 1, '
        'every image)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='Test time augmentation')
    parser.add_argument(
        '--fast',
        action='store_true',
        help='fold BatchNorm into the convolutions and use channels_last '
        '(FastInferenceHook): same predictions up to float rounding, faster')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision (mmengine\'s TestLoop fp16): float16 on CUDA, '
        'bfloat16 on CPU; with --fast the fastest on a GPU')
    add_common_args(parser)
    add_check_args(parser)
    return parser.parse_args(argv)


def is_classification(cfg) -> bool:
    return cfg.get('default_scope') == 'mmpretrain'


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks. Refer to '
            'usage "visualization=dict(type=\'VisualizationHook\')"')
    visualization_hook = default_hooks['visualization']
    visualization_hook['interval'] = args.show_interval
    if is_classification(cfg):  # mmpretrain's VisualizationHook
        visualization_hook.update(
            enable=True, show=args.show, wait_time=args.wait_time,
            out_dir=args.show_dir)
        return cfg
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def main(argv=None):
    run_with_one_line_errors(test, parse_args(argv))


def test(args):
    cfg = load_config(args)
    model = check_model(cfg)
    checkpoint = read_checkpoint(args.checkpoint)
    check_fits(
        model,
        state_dict_of(checkpoint, args.checkpoint),
        args.checkpoint,
        strict=args.strict_load == 'true')
    check_segmentation_data(cfg, ['test_dataloader'], args.check_labels,
                            model, trained_classes(checkpoint))
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None and is_classification(cfg):
        evaluators = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [
            *evaluators, dict(type='DumpResults', out_file_path=args.out)
        ]
    elif args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or dict(type='TestLoop'),
                            fp16=True)
    if args.fast:
        cfg.custom_hooks = [
            *cfg.get('custom_hooks', []),
            dict(type='FastInferenceHook')
        ]

    runner = build_runner(cfg)
    with mmengine_checkpoint_loading():  # torch >= 2.6 weights-only load
        runner.test()


if __name__ == '__main__':
    main()
