# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/analysis_tools/benchmark_data.py: the train data path of a config
timed without its model, runs interleaved (on CPU here; tools/gpu_checks.sh
runs it on a GPU)."""
import json

import pytest

from .demo_data import MAIN_CONFIG, make_cityscapes, run_tool


def test_runs_time_the_loader_and_preprocessor_and_size_the_batch(
        tmp_path):
    root = make_cityscapes(tmp_path / 'data', 3, 1, height=64, width=128)
    out = tmp_path / 'data.json'
    result = run_tool(
        'analysis_tools/benchmark_data.py', MAIN_CONFIG, root, '--batches',
        '2', '--rounds', '3', '--run', 'uint8=', '--run',
        'int64=train_dataloader.dataset.pipeline.3.type=PackSegInputs',
        '--cfg-options', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=1', '--json', out)
    data = json.loads(out.read_text())
    assert list(data['results']) == ['uint8', 'int64']
    uint8, int64 = data['results']['uint8'], data['results']['int64']
    assert int64['options'] == [
        'train_dataloader.dataset.pipeline.3.type=PackSegInputs']
    assert (uint8['labels_dtype'], int64['labels_dtype']) == (
        'torch.uint8', 'torch.int64')
    assert uint8['num_workers'] == 1 and not uint8['pin_memory']
    assert data['cores'] >= 1 and data['torch']  # what the numbers depend on
    # two 64x128 images and label maps a batch
    assert uint8['images'] == 2
    assert uint8['inputs_mb'] == int64['inputs_mb'] == pytest.approx(
        2 * 3 * 64 * 128 / 2**20)
    assert int64['labels_mb'] == 8 * uint8['labels_mb'] == pytest.approx(
        8 * 2 * 64 * 128 / 2**20)
    for r in (uint8, int64):
        assert r['min_s'] <= r['batch_s'] <= r['max_s']
        assert r['images_per_s'] == pytest.approx(2 / r['batch_s'])
        assert 0 < r['preprocessor_s']
    lines = result.stdout.splitlines()
    # the rounds interleaved, the first a warm-up
    rounds = [line.split(':')[0] for line in lines
              if line.startswith('round ')]
    assert rounds == [f'round {r}/3 {name}' for r in (1, 2, 3)
                      for name in ('uint8', 'int64')]
    assert lines[-3].split()[:2] == ['run', 'batch']
    assert lines[-1].split()[0] == 'int64' and '(torch.int64)' in lines[-1]


def test_a_run_needs_a_name_and_key_values(tmp_path):
    result = run_tool('analysis_tools/benchmark_data.py', MAIN_CONFIG,
                      tmp_path, '--run', 'a=notanoption', check=False)
    assert result.returncode == 2
    assert "--run 'a=notanoption': give NAME=OPTIONS" in result.stderr
