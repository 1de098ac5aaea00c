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
import sys

import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.utils.ckpt_convert import wavemix_convert
from mmseg_wavemix.utils.checkpoints import read_checkpoint, save_converted
from mmseg_wavemix.utils.checks import InputError

# Keys of this package's models: such a file needs no conversion.
OUR_PREFIXES = ('backbone.', 'decode_head.', 'auxiliary_head.', 'head.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert the authors\' WaveMix weights (wavemix==0.2.4) '
        'to an mmseg / mmpretrain checkpoint')
    parser.add_argument('src', help='the authors\' state dict (.pth)')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    return parser.parse_args(argv)


def convert(src: str) -> dict:
    checkpoint = read_checkpoint(src)
    if not isinstance(checkpoint, dict):
        raise InputError(f'{src} holds a {type(checkpoint).__name__}, not a '
                         "state dict of the authors' WaveMix")
    weights = checkpoint.get('state_dict', checkpoint)
    keys = [k for k in weights if not k.startswith('data_preprocessor.')]
    if keys and all(k.startswith(OUR_PREFIXES) for k in keys):
        kind = 'an mmengine training checkpoint' if 'meta' in checkpoint \
            else 'a checkpoint'
        raise InputError(
            f'{src} is {kind} of this package\'s models ({len(keys)} tensors '
            "named backbone.*, ...), not the authors' format: it needs no "
            'conversion; use it with tools/test.py or as load_from')
    try:
        return wavemix_convert(checkpoint)
    except ValueError as e:
        raise InputError(f'{src}: {e}') from e


def main(argv=None):
    args = parse_args(argv)
    try:
        save_converted(convert(args.src), args.src, args.dst)
    except InputError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
