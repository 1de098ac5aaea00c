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

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.utils.analysis import build_model_from_config, count_flops
from mmseg_wavemix.utils.cli import input_errors_in_one_line, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Parameters and GFLOPs of segmentors')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--shape', type=positive_int, nargs=2, default=(512, 1024),
        metavar=('H', 'W'), help='input size (default: 512 1024)')
    parser.add_argument(
        '--markdown', action='store_true', help='print a markdown table')
    return parser.parse_args(argv)


def complexity(config: str, shape) -> dict:
    _, model = build_model_from_config(config)
    flops = count_flops(model, torch.zeros(1, 3, *shape))
    return dict(
        config=osp.relpath(config) if '::' not in config else config,
        params=sum(p.numel() for p in model.parameters()),
        gflops=flops / 1e9)


@input_errors_in_one_line
def main(argv=None):
    args = parse_args(argv)
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
