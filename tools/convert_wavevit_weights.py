# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the Wave-ViT authors' weights (github YehLi/ImageNetModel) to an
mmseg / mmpretrain checkpoint.

Example:
    python tools/convert_wavevit_weights.py wavevit_s.pth.tar \
        checkpoints/wavevit-s_in1k_backbone.pth
    # then, in an mmseg config:
    #   backbone=dict(init_cfg=dict(type='Pretrained',
    #       checkpoint='checkpoints/wavevit-s_in1k_backbone.pth',
    #       prefix='backbone.'))
    python tools/convert_wavevit_weights.py wavevit_s.pth.tar \
        checkpoints/wavevit-s_in1k.pth --with-head   # mmpretrain classifier

The source is their checkpoint (``{'state_dict': ...}`` or a bare state
dict; ``module.`` prefixes allowed), ImageNet or segmentation.
"""
import argparse
import sys
from functools import partial

import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.utils import wavevit_convert
from mmseg_wavemix.utils.checkpoints import convert_file
from mmseg_wavemix.utils.checks import InputError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert the Wave-ViT authors' weights to an mmseg / "
        'mmpretrain checkpoint')
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--with-head',
        action='store_true',
        help='keep their ImageNet heads, for mmpretrain\'s ImageClassifier '
        'with WaveViT(final_norm=False) and WaveViTClsHead '
        '(configs/wavevit_cls)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        convert_file(args.src, args.dst,
                     partial(wavevit_convert, with_head=args.with_head),
                     'Wave-ViT')
    except InputError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
