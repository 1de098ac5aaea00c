# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import json
import os.path as osp

from ..conftest import REPO_ROOT
from .demo_data import run_tool

DEMO = osp.join(REPO_ROOT, 'configs', 'wavemix',
                'wavemix_16x2_l4_cityscapes-demo.py')
DIGITS = osp.join(REPO_ROOT, 'configs', 'wavemix_cls',
                  'wavemix_64x4_l2_1xb64_digits.py')


def test_benchmark_compares_configs(tmp_path):
    out = tmp_path / 'bench.json'
    result = run_tool('benchmark.py', DEMO, '--compare', DIGITS, '--shape',
                      64, 128, '--batch', 2, '--train', '--repeat', 2,
                      '--threads', 1, '--json', out)
    table = result.stdout
    assert 'input 2x3x64x128, fp32, cpu, 1 threads' in table
    assert 'wavemix_16x2_l4_cityscapes-demo.py' in table
    assert 'wavemix_64x4_l2_1xb64_digits.py' in table
    results = json.loads(out.read_text())['results']
    demo, digits = results[DEMO], results[DIGITS]
    assert demo['params'] == 35027 and digits['params'] == 567562
    assert demo['flops'] > 0
    for entry in (demo, digits):
        for mode in ('inference', 'train'):
            stats = entry[mode]
            assert 0 < stats['min_s'] <= stats['median_s'] <= stats['max_s']
            assert stats['images_per_s'] > 0
            assert stats['peak_memory_mb'] >= 0


def test_benchmark_bf16_and_channels_last(tmp_path):
    result = run_tool('benchmark.py', DEMO, '--shape', 64, 128, '--dtype',
                      'bf16', '--channels-last', '--repeat', 1, '--no-flops',
                      '--no-memory')
    assert 'bf16' in result.stdout and 'channels_last' in result.stdout
