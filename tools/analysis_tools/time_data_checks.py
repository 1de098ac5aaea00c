# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Time the start-up data checks of tools/train.py on a generated
Cityscapes train layout (default: the 2,975 images of the real one, at
1024x2048).

Example:
    python tools/analysis_tools/time_data_checks.py work_dirs/checks_data \
        --num 2975
"""
import argparse
import os
import os.path as osp
import time

import cv2
import numpy as np
from mmengine.config import Config

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.utils.checks import LABEL_CHECKS, check_segmentation_data

CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'wavemix', 'wavemix_256x16_l4_cityscapes.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='where to write the generated files')
    parser.add_argument('--num', type=int, default=2975)
    parser.add_argument('--size', type=int, nargs=2, default=(1024, 2048),
                        metavar=('H', 'W'))
    parser.add_argument('--check-labels', choices=LABEL_CHECKS,
                        default='sample')
    return parser.parse_args()


def generate(root, num, height, width):
    """Constant images and label maps: the checks read headers, and decode
    a sample of label maps whatever their content."""
    images = osp.join(root, 'leftImg8bit', 'train', 'city')
    labels = osp.join(root, 'gtFine', 'train', 'city')
    os.makedirs(images, exist_ok=True)
    os.makedirs(labels, exist_ok=True)
    image = np.full((height, width, 3), 128, np.uint8)
    label = np.zeros((height, width), np.uint8)
    for i in range(num):
        name = f'city_{i:06d}_000019'
        path = osp.join(images, f'{name}_leftImg8bit.png')
        if not osp.exists(path):
            cv2.imwrite(path, image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            cv2.imwrite(
                osp.join(labels, f'{name}_gtFine_labelTrainIds.png'), label,
                [cv2.IMWRITE_PNG_COMPRESSION, 1])


def main():
    args = parse_args()
    generate(args.root, args.num, *args.size)
    cfg = Config.fromfile(CONFIG)
    cfg.train_dataloader.dataset.data_root = args.root
    start = time.perf_counter()
    check_segmentation_data(cfg, ['train_dataloader'], args.check_labels)
    elapsed = time.perf_counter() - start
    print(f'{args.num} images {args.size[0]}x{args.size[1]}, '
          f'--check-labels {args.check_labels}: {elapsed:.2f} s')


if __name__ == '__main__':
    main()
