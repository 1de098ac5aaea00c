# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import json

import pytest

from ..conftest import REPO_ROOT
from .demo_data import tool_module

RUNS = f'{REPO_ROOT}/benchmarks'
INFERENCE = f'{RUNS}/inference_1024x2048_cuda_h100_session14.json'
TRAIN = f'{RUNS}/train_512x1024_cpu.json'
HAAR = (f'{RUNS}/haar_dwt_5x64x256x512_cuda_h100_session14_fp16_'
        'channels_last.json')
# a run that took the GPU's own time too
HAAR_GPU_TIME = f'{RUNS}/haar_dwt_5x64x256x512_cuda_h100_session23_fp16.json'


@pytest.fixture(scope='module')
def tool():
    return tool_module('analysis_tools/plot_benchmarks.py')


def test_panels_hold_each_runs_values(tool):
    (inference, ) = tool.panels(json.load(open(INFERENCE)))
    assert inference['title'].startswith('inference: images/s')
    assert 'batch 1 at 1024x2048, NVIDIA H100' in inference['title']
    assert [label for label, _ in inference['bars']] == [
        'ours\nfp16, --fast', "authors' wavemix==0.2.4\nfp16"
    ]
    results = json.load(open(INFERENCE))['results']
    assert [value for _, value in inference['bars']] == [
        r['inference']['images_per_s'] for r in results.values()
    ]
    step, memory = tool.panels(json.load(open(TRAIN)))
    results = json.load(open(TRAIN))['results']
    assert [value for _, value in step['bars']] == [
        r['train']['median_s'] for r in results.values()
    ]
    assert [value for _, value in memory['bars']] == pytest.approx(
        [r['train']['peak_memory_mb'] / 1024 for r in results.values()])
    labels = [label for label, _ in memory['bars']]
    assert labels[2] == 'ours\nfp32, with_cp'
    assert labels[-1] == 'segformer_mit-b5 (mmseg)\nfp32'
    # a loop entry trains in its config's precision, not the entry's fp32
    assert tool.entry_label('configs/wavemix/x.py@fast_train,loop', dict(
        dtype='fp32')) == "ours\nconfig's dtype, FastTrainingHook, loop"


def test_haar_runs_draw_each_implementation(tool):
    data = json.load(open(HAAR))
    (panel, ) = tool.panels(data)  # session 14's run: wall time only
    assert panel['title'].startswith('Haar DWT forward + backward: ms')
    assert '5x64x256x512 fp16 channels_last, cuda' in panel['title']
    assert panel['bars'] == [(name, r['median_ms'])
                             for name, r in data['results'].items()]
    assert panel['bars'][0][0] == 'ours'
    data = json.load(open(HAAR_GPU_TIME))
    wall, gpu = tool.panels(data)
    assert wall['bars'] == [(name, r['median_ms'])
                            for name, r in data['results'].items()]
    assert gpu['title'].startswith('Haar DWT forward + backward: GPU ms')
    assert gpu['bars'] == [(name, r['device_median_ms'])
                           for name, r in data['results'].items()]


def test_writes_one_image_of_all_runs(tool, tmp_path, capsys):
    out = tmp_path / 'figure' / 'runs.png'
    tool.main([INFERENCE, TRAIN, HAAR, '--out', str(out), '--title', 'runs'])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    printed = capsys.readouterr().out
    assert 'ours, fp16, --fast' in printed and f'wrote {out}' in printed


def test_no_results_is_an_error(tool, tmp_path):
    empty = tmp_path / 'empty.json'
    data = json.load(open(INFERENCE))
    data['results'] = {'authors': {'error': 'out of memory'}}
    empty.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match='no results to draw'):
        tool.main([str(empty), '--out', str(tmp_path / 'x.png')])


def test_a_file_that_is_not_a_run_is_named(tool, tmp_path):
    out = str(tmp_path / 'x.png')
    missing = tmp_path / 'none.json'
    with pytest.raises(SystemExit, match=f'error: cannot read {missing}: '
                       'FileNotFoundError'):
        tool.main([str(missing), '--out', out])
    text = tmp_path / 'log.txt'
    text.write_text('Iter(train) [10/60]\n')
    with pytest.raises(SystemExit, match=f'error: cannot read {text}: '
                       'JSONDecodeError'):
        tool.main([str(text), '--out', out])
    other = tmp_path / 'other.json'
    other.write_text(json.dumps({'mIoU': 64.88}))
    with pytest.raises(SystemExit, match=f'error: {other} is not the JSON of '
                       'tools/benchmark.py'):
        tool.main([INFERENCE, str(other), '--out', out])
