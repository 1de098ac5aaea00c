# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/analysis_tools/benchmark_recipe.py: tools/train.py runs timed from
mmengine's log, on CPU (the GPU's numbers come from tools/gpu_checks.sh)."""
import json

import pytest

from .demo_data import data_root_options, make_cityscapes, run_tool
from .test_train_and_test_tools import TINY_MODEL

CONFIG = 'configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py'


def test_runs_are_timed_from_their_logs_and_a_failed_one_is_named(
        tmp_path):
    root = make_cityscapes(tmp_path / 'data', 2, 1, height=64, width=128)
    # the loaders in the tool's process (no workers), the tiny model
    options = [
        o for o in data_root_options(root) if 'data_root' not in o
    ] + TINY_MODEL + ['train_dataloader.batch_size=2']
    out = tmp_path / 'recipe.json'
    result = run_tool(
        'analysis_tools/benchmark_recipe.py', CONFIG, root, '--iters', '4',
        '--interval', '1', '--skip', '1', '--work-dir', tmp_path / 'runs',
        '--run', 'recipe=', '--run', 'eager=--no-cuda-graphs', '--run',
        'broken=--no-such-flag', '--json', out, '--cfg-options', *options,
        check=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith('failed: broken')
    data = json.loads(out.read_text())
    assert data['finished'] and data['batch'] == 2
    assert list(data['results']) == ['recipe', 'eager', 'broken']
    for name in ('recipe', 'eager'):
        entry = data['results'][name]
        assert entry['returncode'] == 0
        train = entry['train']
        # four logged iterations, the first left out
        assert train['windows'] == 3
        assert train['min_s'] <= train['median_s'] <= train['max_s']
        assert train['images_per_s'] == pytest.approx(2 / train['median_s'])
        assert 0 <= train['data_time_s'] < train['max_s']
    assert data['results']['eager']['args'] == ['--no-cuda-graphs']
    # timed training only: no validation, no checkpoint (the last one
    # included)
    assert not list((tmp_path / 'runs').rglob('*.pth'))
    assert not any('Iter(val)' in log.read_text()
                   for log in (tmp_path / 'runs').rglob('*.log'))
    # the run that failed says so, with the end of its output
    broken = data['results']['broken']
    assert 'train' not in broken and broken['returncode'] == 2
    assert 'unrecognized arguments: --no-such-flag' in broken['errors'][
        'train']
    lines = result.stdout.splitlines()
    # the runs' progress as they go
    assert sum('Iter(train) [4/4]' in line for line in lines) == 2
    assert lines[-4].split()[:3] == ['run', 'step', 'images/s']
    assert [line.split()[0] for line in lines[-3:]] == [
        'recipe', 'eager', 'broken']
    assert lines[-1].split()[1:3] == ['failed', '(exit']


def test_runs_validate_every_val_interval_and_report_each_validation(
        tmp_path):
    root = make_cityscapes(tmp_path / 'data', 2, 3, height=64, width=128)
    options = [
        o for o in data_root_options(root) if 'data_root' not in o
    ] + TINY_MODEL
    out = tmp_path / 'recipe.json'
    result = run_tool(
        'analysis_tools/benchmark_recipe.py', CONFIG, root, '--iters', '4',
        '--interval', '1', '--skip', '1', '--val-interval', '2',
        '--work-dir', tmp_path / 'runs', '--run', 'plain=', '--json', out,
        '--cfg-options', *options)
    entry = json.loads(out.read_text())['results']['plain']
    assert [v['after_iter'] for v in entry['val']] == [2, 4]
    for validation in entry['val']:  # mmseg's val loader: batch 1
        assert 0 < validation['s_per_image']
        assert 0 <= validation['data_time_s'] <= validation['s_per_image']
        assert 0 <= validation['mIoU'] <= 100
    assert entry['train']['windows'] == 3  # the training windows only
    # each validation's result line, and the times in the summary
    assert sum('Iter(val) [3/3]' in line and 'mIoU' in line
               for line in result.stdout.splitlines()) == 2
    times = ', '.join(f'{v["s_per_image"]:.3f}' for v in entry['val'])
    assert result.stdout.splitlines()[-1].endswith(
        f'validation s/image: {times}')


@pytest.mark.parametrize('argv, message', [
    (['--iters', '20'], '--iters 20 leaves no logged window'),
    (['--run', 'cuda_graphs'], "--run 'cuda_graphs': give NAME=ARGS"),
    (['--cfg-options', 'model'], "--cfg-options 'model': give key=value"),
    (['--val-interval', '61'], '--val-interval 61: give 1 to --iters (60)'),
])
def test_arguments_that_cannot_time_anything_are_refused(argv, message):
    result = run_tool('analysis_tools/benchmark_recipe.py', CONFIG, 'data',
                      *argv, check=False)
    assert result.returncode == 2 and message in result.stderr
