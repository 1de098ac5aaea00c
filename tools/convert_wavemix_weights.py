# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the authors' WaveMix weights to an mmseg/mmpretrain checkpoint.

Example:
    python tools/convert_wavemix_weights.py wavemix_cityscapes.pth \
        checkpoints/wavemix_256x16_l4_cityscapes.pth
    python tools/test.py configs/wavemix/wavemix_256x16_l4_cityscapes.py \
        checkpoints/wavemix_256x16_l4_cityscapes.pth

The source is a state dict of ``wavemix.SemSegment.WaveMix`` or
``wavemix.classification.WaveMix`` (pip ``wavemix==0.2.4``), as saved by
``torch.save(model.state_dict(), path)``, or a checkpoint that holds one
(under ``state_dict`` or ``model``). A file that is already in this
package's format (an mmengine checkpoint of our models) is named as such.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading
from mmseg_wavemix.models.utils.ckpt_convert import wavemix_convert

# Keys of this package's models: such a file needs no conversion.
OUR_PREFIXES = ('backbone.', 'decode_head.', 'auxiliary_head.', 'head.')


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
        # weights only, and the types mmengine writes into its checkpoints
        with mmengine_checkpoint_loading():
            checkpoint = torch.load(args.src, map_location='cpu')
    except Exception as e:  # truncated, not a torch file, pickled code, ...
        sys.exit(f'error: cannot read {args.src} as a PyTorch checkpoint '
                 f'({type(e).__name__}: {str(e).splitlines()[0]})')
    if not isinstance(checkpoint, dict):
        sys.exit(f'error: {args.src} holds a {type(checkpoint).__name__}, '
                 "not a state dict of the authors' WaveMix")
    weights = checkpoint.get('state_dict', checkpoint)
    keys = [k for k in weights if not k.startswith('data_preprocessor.')]
    if keys and all(k.startswith(OUR_PREFIXES) for k in keys):
        kind = 'an mmengine training checkpoint' if 'meta' in checkpoint \
            else 'a checkpoint'
        sys.exit(f'error: {args.src} is {kind} of this package\'s models '
                 f'({len(keys)} tensors named backbone.*, ...), not the '
                 "authors' format: it needs no conversion; use it with "
                 'tools/test.py or as load_from')
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
