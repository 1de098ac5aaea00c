# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/analysis_tools/benchmark_level_mlp.py, its kernels run on CPU in
Triton's interpreter (the timings only on a GPU mean anything)."""
import json

import pytest
import torch

from ..conftest import REPO_ROOT
from .demo_data import run_tool, tool_module

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')
DEMO = 'configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py'


@pytest.fixture(scope='module')
def tool():
    return tool_module('analysis_tools/benchmark_level_mlp.py')


def test_each_level_size_with_every_candidate(tool, kernel_calls, tmp_path):
    """One row per level size of the demo model; the fused candidates run
    their kernels and agree with the layers to fp16 rounding."""
    out = tmp_path / 'level_mlp.json'
    results = tool.main([
        f'{REPO_ROOT}/{DEMO}', '--shape', '64', '128', '--repeat', '1',
        '--warmup', '0', '--json', str(out)
    ])
    # coarsest first: a level's channels (+ the coarser output's) and size
    assert list(results) == [
        '16ch 1x2', '16+8ch 2x4', '16+8ch 4x8', '16+8ch 8x16'
    ]
    assert 'add_bias_residual_' in kernel_calls
    assert 'conv_transpose_k4s2' in kernel_calls
    for name, result in results.items():
        rows = result['candidates']
        assert set(rows) == {
            'layers', 'fused auto', 'fused triton', 'fused triton_tma',
            'fused cudnn'
        }
        assert rows['layers']['max_abs_diff'] == 0
        for row in rows.values():
            assert row['us'] > 0 and 'error' not in row
            assert row['max_abs_diff'] < 2e-2, (name, row)
    assert json.loads(out.read_text())['results'] == json.loads(
        json.dumps(results))


def sweep_first_level(tool, monkeypatch, sweep, sweep_tma=()):
    """The tool's sweep of the demo model's first level MLP on CPU."""
    monkeypatch.setattr(tool, 'SWEEP', sweep)
    monkeypatch.setattr(tool, 'SWEEP_TMA', sweep_tma)
    args = tool.parse_args([DEMO, '--repeat', '1', '--warmup', '0'])
    _, model = tool.build_model_from_config(f'{REPO_ROOT}/{DEMO}')
    model = tool.fuse_norm_layers(model.eval())
    cases = tool.level_cases(model, torch.randn(1, 3, 32, 64), torch.float16)
    mlp, inputs = next(iter(cases.values()))
    return tool.sweep_case(mlp, inputs, torch.float16, args,
                           tool.Timer(torch.device('cpu')))


def test_sweep_times_each_tile_size(tool, kernel_calls, monkeypatch):
    results = sweep_first_level(tool, monkeypatch, ((16, 16, 16, 4, 3),
                                                    (32, 16, 16, 4, 2)),
                                ((4, 4, 16, 16, 4, 3), ))
    assert list(results) == [
        'linear_gelu', 'conv_transpose_k4s2', 'conv_transpose_k4s2_tma'
    ]
    assert set(results['conv_transpose_k4s2_tma']['us']) == {
        'cudnn conv_transpose', '4x4x16x16 w4 s3'
    }
    assert set(results['linear_gelu']['us']) == {
        'cublas fc1', '16x16x16 w4 s3', '32x16x16 w4 s2'
    }
    assert results['linear_gelu']['failed'] == {}
    assert 'cudnn conv_transpose' in results['conv_transpose_k4s2']['us']
    times = list(results['conv_transpose_k4s2']['us'].values())
    assert times == sorted(times)
    assert kernel_calls.count('conv_transpose_k4s2') >= 2 * 2


def test_a_tile_size_that_fails_is_reported(tool, kernel_calls,
                                            monkeypatch):
    results = sweep_first_level(tool, monkeypatch, ((16, 16, 16, 4, 3),
                                                    (16, 16, 0, 4, 3)))
    assert list(results['linear_gelu']['failed']) == ['16x16x0 w4 s3']
    assert '16x16x16 w4 s3' in results['linear_gelu']['us']


def test_sweep_needs_a_gpu():
    result = run_tool('analysis_tools/benchmark_level_mlp.py', DEMO,
                      '--sweep', check=False)
    assert result.returncode != 0
    assert '--device cuda' in result.stderr
