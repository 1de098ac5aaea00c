# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Prepare Cityscapes for mmseg: polygons -> ``*_labelTrainIds.png``.

Converts every ``gtFine/**/*_gtFine_polygons.json`` with cityscapesscripts'
``json2labelImg`` (train IDs 0..18, 255 = ignore), exactly as for the
official data, after checking the label names (and then that the train IDs
are in 0..18 or 255). Where ``*_gtFine_labelIds.png`` and
``*_gtFine_instanceIds.png`` are missing (the official zip ships them; data
made from polygons alone does not) they are written too: the official
evaluation (mmseg's ``CityscapesMetric``) reads them. Writes split lists
``train.txt``, ``val.txt`` (and ``test.txt`` if present), one image stem per
line.

Example:
    python tools/dataset_converters/cityscapes.py data/cityscapes --nproc 8
"""
import argparse
import glob
import json
import os.path as osp
import sys

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from mmengine.utils import track_parallel_progress, track_progress
from PIL import Image

POLYGON_SUFFIX = '_gtFine_polygons.json'
LABEL_SUFFIX = '_gtFine_labelTrainIds.png'
LABEL_ID_SUFFIX = '_gtFine_labelIds.png'
INSTANCE_ID_SUFFIX = '_gtFine_instanceIds.png'
VALID_TRAIN_IDS = set(range(19)) | {255}


def write_instance_ids(json_file: str, out_file: str) -> None:
    """cityscapesscripts' json2instanceImg, saved as a 16-bit PNG like the
    official files (current Pillow cannot write its 32-bit image as PNG)."""
    annotation = Annotation()
    annotation.fromJsonFile(json_file)
    instance_ids = np.asarray(createInstanceImage(annotation, 'ids'))
    Image.fromarray(instance_ids.astype(np.uint16)).save(out_file)


def check_label_names(json_file: str) -> None:
    """cityscapesscripts exits the process on an unknown label name; say
    which file and label instead."""
    with open(json_file) as f:
        objects = json.load(f).get('objects', [])
    for obj in objects:
        label = obj.get('label', '')
        name = label[:-len('group')] if label.endswith('group') else label
        if name not in name2label:
            raise ValueError(f'{json_file}: unknown Cityscapes label '
                             f'{label!r}; see cityscapesscripts.helpers.'
                             'labels for the valid names')


def check_train_ids(label_file: str) -> None:
    values = set(np.unique(np.asarray(Image.open(label_file))).tolist())
    bad = values - VALID_TRAIN_IDS
    if bad:
        raise ValueError(f'{label_file}: train IDs {sorted(bad)} outside '
                         '0..18 and 255')


def convert_json_to_label(json_file: str) -> str:
    stem = json_file[:-len(POLYGON_SUFFIX)]
    check_label_names(json_file)
    json2labelImg(json_file, stem + LABEL_SUFFIX, 'trainIds')
    check_train_ids(stem + LABEL_SUFFIX)
    if not osp.exists(stem + LABEL_ID_SUFFIX):
        json2labelImg(json_file, stem + LABEL_ID_SUFFIX, 'ids')
    if not osp.exists(stem + INSTANCE_ID_SUFFIX):
        write_instance_ids(json_file, stem + INSTANCE_ID_SUFFIX)
    return stem + LABEL_SUFFIX


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert Cityscapes annotations to TrainIds')
    parser.add_argument('cityscapes_path', help='Cityscapes root directory')
    parser.add_argument('--gt-dir', default='gtFine', type=str)
    parser.add_argument('-o', '--out-dir', help='where to write split lists '
                        '(default: cityscapes_path)')
    parser.add_argument(
        '--nproc', default=1, type=int, help='number of processes')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = args.cityscapes_path
    gt_dir = osp.join(root, args.gt_dir)
    if not osp.isdir(gt_dir):
        sys.exit(f'error: {gt_dir} does not exist; expected the Cityscapes '
                 'layout ROOT/gtFine/{train,val}/<city>/*' + POLYGON_SUFFIX)
    json_files = sorted(
        glob.glob(osp.join(gt_dir, '**', '*' + POLYGON_SUFFIX),
                  recursive=True))
    if not json_files:
        sys.exit(f'error: no *{POLYGON_SUFFIX} files under {gt_dir}; '
                 'download gtFine_trainvaltest.zip and unzip it into '
                 f'{root}')

    try:
        if args.nproc > 1:
            track_parallel_progress(convert_json_to_label, json_files,
                                    args.nproc)
        else:
            track_progress(convert_json_to_label, json_files)
    except ValueError as e:
        sys.exit(f'\nerror: {e}')

    out_dir = args.out_dir or root
    for split in ('train', 'val', 'test'):
        split_dir = osp.join(gt_dir, split)
        stems = sorted(
            osp.relpath(f, split_dir)[:-len(POLYGON_SUFFIX)]
            for f in json_files if f.startswith(split_dir + osp.sep))
        if stems:
            with open(osp.join(out_dir, f'{split}.txt'), 'w') as f:
                f.writelines(stem + '\n' for stem in stems)
    print(f'\nconverted {len(json_files)} annotations in {gt_dir}')


if __name__ == '__main__':
    main()
