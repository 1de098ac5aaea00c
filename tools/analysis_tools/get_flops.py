# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Parameters and FLOPs of one or more configs at a given input size
(mmengine's analysis tools; one multiply-add counts as one FLOP, as in
mmseg's get_flops.py).

Example:
    python tools/analysis_tools/get_flops.py configs/wavemix_decoders/*.py \
        --shape 512 1024 --markdown
"""
import argparse
import os.path as osp

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.engine.cli import resolve_config_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Parameters and GFLOPs of segmentors')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=(512, 1024),
        metavar=('H', 'W'), help='input size (default: 512 1024)')
    parser.add_argument(
        '--markdown', action='store_true', help='print a markdown table')
    return parser.parse_args(argv)


def complexity(config: str, shape) -> dict:
    cfg = Config.fromfile(resolve_config_path(config))
    # SyncBN needs a process group and counts the same as BN.
    cfg = Config.fromstring(
        cfg.pretty_text.replace("type='SyncBN'", "type='BN'"), '.py')
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        info = get_model_complexity_info(
            model,
            inputs=(torch.zeros(1, 3, *shape), ),
            show_table=False,
            show_arch=False)
    return dict(
        config=osp.relpath(config), params=info['params'],
        gflops=info['flops'] / 1e9)


def main(argv=None):
    args = parse_args(argv)
    register_all_modules()
    rows = [complexity(config, args.shape) for config in args.configs]
    h, w = args.shape
    if args.markdown:
        print(f'| config | params | GFLOPs at {h}x{w} |\n|---|---|---|')
        for row in rows:
            print(f"| `{row['config']}` | {row['params'] / 1e6:.1f}M | "
                  f"{row['gflops']:.0f} |")
    else:
        for row in rows:
            print(f"{row['config']}: {row['params']:,} parameters, "
                  f"{row['gflops']:.1f} GFLOPs at {h}x{w}")


if __name__ == '__main__':
    main()
