# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the authors' WaveMix weights to an mmseg/mmpretrain checkpoint.

Example:
    python tools/convert_wavemix_weights.py wavemix_cityscapes.pth \
        checkpoints/wavemix_256x16_l4_cityscapes.pth
    python tools/test.py configs/wavemix/wavemix_256x16_l4_cityscapes.py \
        checkpoints/wavemix_256x16_l4_cityscapes.pth

The source is a state dict of ``wavemix.SemSegment.WaveMix`` or
``wavemix.classification.WaveMix`` (pip ``wavemix==0.2.4``), as saved by
``torch.save(model.state_dict(), path)``.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from mmseg_wavemix.models.utils.ckpt_convert import wavemix_convert


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert the authors\' WaveMix weights (wavemix==0.2.4) '
        'to an mmseg / mmpretrain checkpoint')
    parser.add_argument('src', help='the authors\' state dict (.pth)')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.src):
        sys.exit(f'error: source checkpoint not found: {args.src}')
    try:
        # The authors saved plain state dicts: tensors only.
        checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated, not a torch file, pickled code, ...
        sys.exit(f'error: cannot read {args.src} as a PyTorch state dict '
                 f'({type(e).__name__}: {str(e).splitlines()[0]})')
    try:
        state_dict = wavemix_convert(checkpoint)
    except ValueError as e:
        sys.exit(f'error: {args.src}: {e}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(
        dict(state_dict=state_dict, meta=dict(converted_from=args.src)),
        args.dst)
    print(f'converted {len(state_dict)} tensors: {args.dst}')


if __name__ == '__main__':
    main()
