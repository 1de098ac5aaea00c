# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the SVT authors' weights (github badripatro/svt) to an mmseg /
mmpretrain checkpoint for ``ScatteringViT``.

Example:
    python tools/convert_svt_weights.py svt_s.pth \
        checkpoints/svt-s_in1k_backbone.pth
    # then, in an mmseg config:
    #   backbone=dict(init_cfg=dict(type='Pretrained',
    #       checkpoint='checkpoints/svt-s_in1k_backbone.pth',
    #       prefix='backbone.'))
    # (a model with another img_size gets the low-pass filters resized)
    python tools/convert_svt_weights.py svt_s.pth \
        checkpoints/svt-s_in1k.pth --with-head   # mmpretrain classifier

The source is their checkpoint (``{'model': ...}`` as their main.py saves
it, ``{'state_dict': ...}`` or a bare state dict; ``module.`` prefixes
allowed). The DTCWT's fixed filters in it are dropped (ours are not
stored).
"""
import argparse
import sys
from functools import partial

import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.utils import svt_convert
from mmseg_wavemix.utils.checkpoints import convert_file
from mmseg_wavemix.utils.checks import InputError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert the SVT authors' weights to an mmseg / "
        'mmpretrain checkpoint')
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--with-head',
        action='store_true',
        help='keep their ImageNet heads, for mmpretrain\'s ImageClassifier '
        'with ScatteringViT(final_norm=False) and WaveViTClsHead '
        '(configs/svt_cls)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        convert_file(args.src, args.dst,
                     partial(svt_convert, with_head=args.with_head), 'SVT')
    except InputError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
