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
import os
import os.path as osp
import sys

import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading
from mmseg_wavemix.models.utils import wavevit_convert


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
    if not osp.isfile(args.src):
        sys.exit(f'error: source checkpoint not found: {args.src}')
    try:
        with mmengine_checkpoint_loading():  # weights only
            checkpoint = torch.load(args.src, map_location='cpu')
    except Exception as e:  # truncated, not a torch file, pickled code, ...
        sys.exit(f'error: cannot read {args.src} as a PyTorch checkpoint '
                 f'({type(e).__name__}: {str(e).splitlines()[0]})')
    if not isinstance(checkpoint, dict):
        sys.exit(f'error: {args.src} holds a {type(checkpoint).__name__}, '
                 'not a Wave-ViT state dict')
    try:
        state_dict = wavevit_convert(checkpoint, with_head=args.with_head)
    except ValueError as e:
        sys.exit(f'error: {args.src}: {e}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(
        dict(state_dict=state_dict, meta=dict(converted_from=args.src)),
        args.dst)
    print(f'converted {len(state_dict)} tensors: {args.dst}')


if __name__ == '__main__':
    main()
