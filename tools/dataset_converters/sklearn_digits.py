# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Prepare scikit-learn's handwritten digits (1,797 real 8x8 images of the
UCI optical recognition dataset, shipped inside scikit-learn) as an
mmpretrain ``CustomDataset``::

    ROOT/train/<digit>/<index>.png
    ROOT/val/<digit>/<index>.png

The split is stratified and deterministic (``--val-ratio``, ``--seed``).

Example:
    python tools/dataset_converters/sklearn_digits.py data/digits
"""
import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Prepare scikit-learn digits for mmpretrain')
    parser.add_argument('root', help='output directory')
    parser.add_argument(
        '--val-ratio', type=float, default=0.2,
        help='held-out fraction (default: 0.2)')
    parser.add_argument('--seed', type=int, default=0, help='split seed')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.val_ratio < 1:
        raise SystemExit('error: --val-ratio must be in (0, 1)')
    digits = load_digits()
    # 0..16 intensities -> 0..255 grey levels
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    indices = np.arange(len(images))
    train, val = train_test_split(
        indices, test_size=args.val_ratio, random_state=args.seed,
        stratify=digits.target)
    for split, split_indices in (('train', train), ('val', val)):
        for index in split_indices:
            folder = osp.join(args.root, split, str(digits.target[index]))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(images[index]).save(
                osp.join(folder, f'{index:04d}.png'))
    print(f'wrote {len(train)} train and {len(val)} val images to '
          f'{args.root}')


if __name__ == '__main__':
    main()
