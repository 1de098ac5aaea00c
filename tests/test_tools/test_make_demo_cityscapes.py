# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import filecmp
import json
import os

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import name2label
from PIL import Image

from .demo_data import make_cityscapes, run_tool, tool_module


def test_generated_data_is_deterministic_cityscapes(tmp_path):
    first = make_cityscapes(tmp_path / 'a', 2, 1, 96, 192)
    run_tool('dataset_converters/make_demo_cityscapes.py', tmp_path / 'b',
             '--num-train', 2, '--num-val', 1, '--size', 96, 192)
    names = []
    for dirpath, _, files in os.walk(tmp_path / 'b'):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), tmp_path / 'b')
            names.append(rel)
            assert filecmp.cmp(first / rel, tmp_path / 'b' / rel,
                               shallow=False), rel
    assert sorted(n.split('/')[1] for n in names if n.endswith('.png')) == [
        'train', 'train', 'val'
    ]

    polygons = next((first / 'gtFine' / 'val').rglob('*_polygons.json'))
    annotation = json.loads(polygons.read_text())
    assert (annotation['imgHeight'], annotation['imgWidth']) == (96, 192)
    assert all(obj['label'] in name2label for obj in annotation['objects'])

    # the converter wrote train IDs, label IDs, instance IDs and split lists
    stem = str(polygons)[:-len('_gtFine_polygons.json')]
    train_ids = np.array(Image.open(stem + '_gtFine_labelTrainIds.png'))
    assert train_ids.shape == (96, 192)
    assert set(np.unique(train_ids)) <= set(range(19)) | {255}
    assert len(set(np.unique(train_ids))) >= 4  # a scene, not a blank image
    assert os.path.exists(stem + '_gtFine_labelIds.png')
    assert os.path.exists(stem + '_gtFine_instanceIds.png')
    assert (first / 'val.txt').read_text().count('\n') == 1
    assert (first / 'train.txt').read_text().count('\n') == 2


def test_converter_errors(tmp_path):
    result = run_tool('dataset_converters/cityscapes.py', tmp_path,
                      check=False)
    assert result.returncode != 0 and 'gtFine' in result.stderr
    (tmp_path / 'gtFine').mkdir()
    result = run_tool('dataset_converters/cityscapes.py', tmp_path,
                      check=False)
    assert result.returncode != 0
    assert 'no *_gtFine_polygons.json files' in result.stderr


def test_converter_rejects_unknown_labels(tmp_path):
    root = make_cityscapes(tmp_path / 'cs', 1, 1, 32, 64)
    polygons = next((root / 'gtFine' / 'val').rglob('*_polygons.json'))
    annotation = json.loads(polygons.read_text())
    annotation['objects'][0]['label'] = 'spaceship'
    polygons.write_text(json.dumps(annotation))
    result = run_tool('dataset_converters/cityscapes.py', root, '--nproc', 2,
                      check=False)
    assert result.returncode != 0
    assert "unknown Cityscapes label 'spaceship'" in result.stderr
    assert polygons.name in result.stderr


def test_converter_rejects_train_ids_out_of_range(tmp_path):
    converter = tool_module('dataset_converters/cityscapes.py')
    label_file = tmp_path / 'x_gtFine_labelTrainIds.png'
    Image.fromarray(np.array([[0, 18], [255, 40]], np.uint8)).save(label_file)
    with pytest.raises(ValueError, match=r'train IDs \[40\] outside'):
        converter.check_train_ids(str(label_file))
    Image.fromarray(np.array([[0, 18], [255, 3]], np.uint8)).save(label_file)
    converter.check_train_ids(str(label_file))  # valid: no error
