# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import argparse
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmseg_wavemix.utils.benchmark import FLAGS, parse_entry

from ..conftest import REPO_ROOT
from .demo_data import run_tool, tool_module

DEMO = osp.join(REPO_ROOT, 'configs', 'wavemix',
                'wavemix_16x2_l4_cityscapes-demo.py')
DIGITS = osp.join(REPO_ROOT, 'configs', 'wavemix_cls',
                  'wavemix_64x4_l2_1xb64_digits.py')


@pytest.fixture(scope='module')
def authors_package(tmp_path_factory):
    """The authors' wavemix==0.2.4 in a directory of its own (it is kept out
    of the environment; pip's cache makes this quick after the first run)."""
    target = tmp_path_factory.mktemp('authors_wavemix')
    subprocess.run([
        sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
        '--target', str(target), 'wavemix==0.2.4', 'einops'
    ], check=True, timeout=600)
    return target


def test_benchmark_compares_configs(tmp_path):
    out = tmp_path / 'bench.json'
    fused = f'{DEMO}@fuse_norm,fold_classifier,fuse_activation'
    result = run_tool('benchmark.py', DEMO, '--compare', DIGITS, fused,
                      '--shape', 64, 128, '--batch', 2, '--train', '--repeat',
                      2, '--threads', 1, '--json', out)
    table = result.stdout
    assert 'input 2x3x64x128, cpu, 1 threads' in table
    assert 'wavemix_16x2_l4_cityscapes-demo.py' in table
    assert 'wavemix_64x4_l2_1xb64_digits.py' in table
    saved = json.loads(out.read_text())
    assert saved['environment']['threads'] == 1
    assert saved['finished'] is True
    assert not list(tmp_path.glob('.*.tmp'))  # written in one step
    results = saved['results']
    demo, digits = results[DEMO], results[DIGITS]
    assert demo['params'] == 35027 and digits['params'] == 567562
    assert demo['flops'] > 0
    # FLOPs of the model that runs (the demo has more classes than channels:
    # its folded classifier costs more)
    assert results[fused]['flops'] > demo['flops']
    inference = demo['inference']
    assert inference['gemm_peak_gflops'] > 0
    assert inference['achieved_gflops'] == pytest.approx(
        2 * demo['flops'] * 2 / inference['median_s'] / 1e9)
    assert 'GEMM peak (1x1 conv, channels_last): fp32' in table
    for entry in (demo, digits):
        assert entry['dtype'] == 'fp32' and not entry['channels_last']
        for mode in ('inference', 'train'):
            stats = entry[mode]
            assert 0 < stats['min_s'] <= stats['median_s'] <= stats['max_s']
            assert stats['images_per_s'] > 0
            assert stats['peak_memory_mb'] >= 0
            assert 0 <= stats['kernel_cpu_share'] <= 1
            assert stats['page_faults'] >= 0
    assert 'kernel CPU % (infer/train)' in table
    # the progress, on stderr: every round of each entry, in order
    rounds = [line.split(': ')[0] for line in result.stderr.splitlines()
              if line.startswith(('inference round', 'train round')) and
              line.split(': ')[1] == DEMO]
    assert rounds == [f'{mode} round {r}/3' + (' (warm-up)' if r == 1 else '')
                      for mode in ('inference', 'train') for r in (1, 2, 3)]


def test_benchmark_entry_options_and_the_authors_model(
        tmp_path, authors_package):
    """One config in several modes, and the authors' package, in one run;
    the authors' logits equal ours (same weights)."""
    fast = f'{DEMO}@bf16,fast'
    checkpointed = f'{DEMO}@with_cp'
    out = tmp_path / 'bench.json'
    result = run_tool('benchmark.py', DEMO, '--compare', fast, checkpointed,
                      'authors', '--authors-package', authors_package,
                      '--shape', 64, 128, '--train', '--repeat', 1,
                      '--threads', 1, '--no-flops', '--no-memory', '--json',
                      out)
    assert "authors: max |authors' logits - ours|" in result.stdout
    results = json.loads(out.read_text())['results']
    assert results[fast]['dtype'] == 'bf16'
    assert results[fast]['fast'] and results[fast]['channels_last']
    assert results[checkpointed]['with_cp']
    authors = results['authors']
    assert authors['params'] == results[DEMO]['params']
    assert authors['max_abs_diff_vs_ours'] < 1e-4
    assert authors['train']['median_s'] > 0


def test_benchmark_global_flags_apply_to_every_entry(tmp_path):
    out = tmp_path / 'bench.json'
    run_tool('benchmark.py', DEMO, '--compare', f'{DEMO}@fp32', '--dtype',
             'bf16', '--channels-last', '--fuse-norm', '--shape', 64, 128,
             '--repeat', 1, '--no-flops', '--no-memory', '--json', out)
    results = json.loads(out.read_text())['results']
    assert results[DEMO]['dtype'] == 'bf16'
    assert results[f'{DEMO}@fp32']['dtype'] == 'fp32'  # entry option wins
    assert all(r['channels_last'] and r['fuse_norm'] and not r['with_cp']
               for r in results.values())


def test_benchmark_rejects_unknown_options():
    result = run_tool('benchmark.py', f'{DEMO}@fp64', check=False)
    assert result.returncode != 0
    assert "unknown option 'fp64'" in result.stderr
    result = run_tool('benchmark.py', 'authors', check=False)
    assert 'the first entry must be a config' in result.stderr
    result = run_tool('benchmark.py', f'{DEMO}@fp16,no_fuse_mlp', check=False)
    assert 'no_fuse_mlp changes a step of fast' in result.stderr


@pytest.mark.parametrize('option', ['cuda_graphs', 'keep_levels'])
def test_options_of_fast_train(option):
    args = argparse.Namespace(dtype='fp32', **dict.fromkeys(FLAGS, False))
    with pytest.raises(SystemExit, match=f'{option} changes a step of '
                       'fast_train; add fast_train'):
        parse_entry(f'{DEMO}@fp16,{option}', args)
    entry = parse_entry(f'{DEMO}@fp16,fast_train,{option}', args)
    assert entry[option] and entry['fast_train']


def test_training_graphs_not_recorded_fail_their_entry():
    """A cuda_graphs entry whose parts did not record their graphs fails
    (its rows would be the eager step's), with the recording's warning."""
    import warnings

    import torch.nn as nn

    from mmseg_wavemix.models.accel import training_cuda_graphs
    from mmseg_wavemix.utils.benchmark import check_training_graphs_recorded
    model = nn.Module()
    model.backbone, model.decode_head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
    model.auxiliary_head = nn.Conv2d(4, 2, 1)  # not called: no graphs
    training_cuda_graphs(model)
    with pytest.raises(RuntimeError, match=r'not recorded$'):
        check_training_graphs_recorded(model, [])  # none yet
    for part in (model.backbone, model.decode_head):
        part.forward.graphs['key'] = object()
    check_training_graphs_recorded(model, [])
    model.decode_head.forward.graphs['key'] = None
    caught = [
        warnings.WarningMessage(UserWarning('other'), UserWarning, 'a', 1),
        warnings.WarningMessage(
            UserWarning('CUDA graphs: the training step cannot be recorded '
                        '(why)'), UserWarning, 'b', 2)
    ]
    with pytest.raises(RuntimeError, match=r'not recorded: CUDA graphs: '
                       r'the training step cannot be recorded \(why\)'):
        check_training_graphs_recorded(model, caught)
    with pytest.raises(RuntimeError, match='not recorded'):
        check_training_graphs_recorded(nn.Conv2d(3, 4, 1), [])


def test_loop_runs_the_training_step_of_tools_train():
    """``loop``: mmengine's train_step with the config's optimizer wrapper
    (AdamW; AMP falls back to fp32 without CUDA) and NonFiniteLossHook, on a
    batch of uint8 images and labels from the host as the config's pipeline
    packs them (uint8: PackSegInputsUint8), which stays as the data loader
    gave it."""
    from mmseg_wavemix.utils.benchmark import Bench
    args = argparse.Namespace(
        dtype='fp32', shape=(32, 64), batch=2, device='cpu',
        **dict.fromkeys(FLAGS, False))
    with pytest.raises(SystemExit, match='leave out the dtype'):
        parse_entry(f'{DEMO}@fp16,loop', args)
    with pytest.raises(SystemExit, match='leave out the dtype'):
        parse_entry('authors@loop', args)
    with pytest.warns(UserWarning, match='training in fp32'):
        bench = Bench(parse_entry(f'{DEMO}@loop', args), args)
    assert type(bench.optim_wrapper.optimizer).__name__ == 'AdamW'
    assert bench.optim_wrapper.backward.__name__ == 'checked_backward'
    images = [image.clone() for image in bench.batch['inputs']]
    before = [p.detach().clone() for p in bench.model.parameters()]
    bench.train_step()
    assert bench.model.training
    assert any(not torch.equal(a, p)
               for a, p in zip(before, bench.model.parameters()))
    for image, given in zip(images, bench.batch['inputs']):
        assert given.dtype == torch.uint8 and torch.equal(image, given)
    assert bench.batch['data_samples'][0].gt_sem_seg.data.dtype == \
        torch.uint8


def test_a_failing_entry_is_reported_in_its_row(tmp_path):
    """An entry that cannot be built (no WaveMixHead to fold) is reported;
    the run goes on, measures the others and exits 0."""
    out = tmp_path / 'bench.json'
    failing = f'{DIGITS}@fold_classifier'
    result = run_tool('benchmark.py', DEMO, '--compare', failing, '--shape',
                      32, 64, '--repeat', 1, '--warmup', 0, '--no-flops',
                      '--no-memory', '--json', out)
    assert result.returncode == 0
    assert 'failed to build, see below' in result.stdout
    assert (f'{failing}: build failed: ValueError: fold_classifier needs a '
            'WaveMixHead') in result.stdout
    results = json.loads(out.read_text())['results']
    assert 'inference' not in results[failing]
    assert results[DEMO]['inference']['median_s'] > 0


def test_a_step_that_fails_is_reported_and_the_others_run(
        monkeypatch, capsys):
    """A step failing mid-run (e.g. out of memory in training) drops that
    entry from the step's remaining rounds only; the progress line says
    why."""
    tool = tool_module('benchmark.py')
    plain_step = tool.Bench.train_step

    def train_step(bench):
        if bench.entry['channels_last']:
            raise RuntimeError('out of memory (simulated)\nmore text')
        plain_step(bench)

    monkeypatch.setattr(tool.Bench, 'train_step', train_step)
    args = tool.parse_args([
        DEMO, '--compare', f'{DEMO}@channels_last', '--shape', '32', '64',
        '--train', '--repeat', '2', '--warmup', '0', '--no-flops',
        '--no-memory'
    ])
    results = tool.run(args)
    failing = results[f'{DEMO}@channels_last']
    assert failing['errors'] == {
        'train': 'RuntimeError: out of memory (simulated)'
    }
    progress = capsys.readouterr().err.splitlines()
    assert (f'train round 1/2: {DEMO}@channels_last: failed: RuntimeError: '
            'out of memory (simulated)') in progress
    assert failing['inference']['median_s'] > 0 and 'train' not in failing
    assert results[DEMO]['train']['median_s'] > 0
    table = tool.format_table(results, args)
    assert 'channels_last: train failed: RuntimeError' in table


def test_results_are_saved_as_they_are_measured(monkeypatch):
    """The results so far are saved after the timed rounds and after each
    entry's peak memory (on a GPU the slowest part: a fresh process per
    entry): a run cut short keeps what it measured. A mode whose peak
    failed is reported as an error of that mode."""
    tool = tool_module('benchmark.py')
    peaks = iter([
        dict(inference=dict(peak_memory_mb=11.0),
             train=dict(peak_memory_mb=12.0, replay_peak_memory_mb=10.0)),
        dict(inference=dict(peak_memory_mb=13.0),
             train='RuntimeError: out of memory')
    ])
    modes = []
    monkeypatch.setattr(tool, 'peak_memory', lambda entry, args, measured:
                        modes.append(measured) or next(peaks))
    args = tool.parse_args([
        DEMO, '--compare', f'{DEMO}@channels_last', '--shape', '32', '64',
        '--train', '--repeat', '1', '--warmup', '0', '--no-flops'
    ])
    saved = []
    results = tool.run(args, lambda results: saved.append(
        json.loads(json.dumps(results))))
    assert modes == [['inference', 'train']] * 2
    assert len(saved) == 1 + 2 and saved[-1] == results
    memory = [[r[mode].get('peak_memory_mb') for r in s.values()
               for mode in ('inference', 'train')] for s in saved]
    assert memory == [[None] * 4, [11.0, 12.0, None, None],
                      [11.0, 12.0, 13.0, None]]
    assert all(r['train']['median_s'] > 0 for r in saved[0].values())
    # CUDA graphs' replayed step beside the recording's peak
    assert results[DEMO]['train']['replay_peak_memory_mb'] == 10.0
    assert '12 (10 replayed)' in tool.format_table(results, args)
    assert results[f'{DEMO}@channels_last']['errors'] == {
        'train peak memory': 'RuntimeError: out of memory'
    }


def test_peak_memory_of_both_modes_in_one_process_on_cuda(monkeypatch):
    """On CUDA one fresh process measures an entry's inference and training
    peaks (a process's start is most of the time), but training as CUDA
    graphs (recorded after inference they held more than alone); on CPU
    each mode has its own (the resident set would keep the first mode's
    memory)."""
    from mmseg_wavemix.utils import benchmark

    groups = []

    class Pool:

        def __init__(self, processes):
            assert processes == 1

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def apply(self, fn, args):
            groups.append(args[2])
            return {mode: dict(peak_memory_mb=1.0) for mode in args[2]}

    monkeypatch.setattr(benchmark.multiprocessing, 'get_context',
                        lambda method: argparse.Namespace(Pool=Pool))
    for device, entry, expected in (
            ('cuda', {}, [['inference', 'train']]),
            ('cuda', dict(cuda_graphs=True), [['inference'], ['train']]),
            ('cpu', {}, [['inference'], ['train']])):
        groups.clear()
        peaks = benchmark.peak_memory(
            entry, argparse.Namespace(device=device), ['inference', 'train'])
        assert peaks == dict(inference=dict(peak_memory_mb=1.0),
                             train=dict(peak_memory_mb=1.0))
        assert groups == expected


def test_the_host_share_of_a_step():
    """On CUDA: how long the host took to launch a step's work, over the
    step; here a stand-in step whose host work and device work (the wait in
    its sync) take 50 ms each."""
    import time

    from mmseg_wavemix.utils.benchmark import summary, timed

    class Step:

        def __call__(self):
            time.sleep(0.05)  # launching
            self.launched_at = time.perf_counter()
            time.sleep(0.05)  # waiting for the device

    step = Step()
    times, usages = zip(*(timed(step, step) for _ in range(3)))
    result = summary(times, usages, batch=1, device='cuda')
    assert 0.35 < result['host_share'] < 0.65, result
    assert 'host_share' not in summary(times, usages, batch=1)  # on CPU
    assert 'host_share' not in summary(times, [timed(step)[1]] * 3, 1, 'cuda')


@pytest.mark.parametrize('layout', ['NCHW', 'channels_last'])
def test_benchmark_haar(tmp_path, layout):
    out = tmp_path / 'haar.json'
    result = run_tool('analysis_tools/benchmark_haar.py', '--shape', 2, 4, 32,
                      64, '--repeat', 2, '--threads', 1, '--json', out,
                      *(['--channels-last'] if layout != 'NCHW' else []))
    assert f'Haar DWT forward + backward, input 2x4x32x64 fp32 {layout}' \
        in result.stdout
    results = json.loads(out.read_text())['results']
    assert set(results) == {
        'ours', 'pytorch_wavelets', 'grouped conv2d', 'x.clone()'
    }
    assert all(r['median_ms'] > 0 for r in results.values())


def test_benchmark_haar_reports_gpu_time_beside_wall_time():
    """On a GPU each implementation's own time (launches hidden behind
    queued work) is a column of its own, with its ratio to the copy's."""
    tool = tool_module('analysis_tools/benchmark_haar.py')
    args = tool.parse_args(['--shape', '5', '64', '256', '512', '--dtype',
                            'fp16', '--device', 'cuda'])
    results = {
        'ours': dict(median_ms=0.72, device_median_ms=0.24),
        'x.clone()': dict(median_ms=0.29, device_median_ms=0.12),
    }
    table = tool.format_table(results, args).splitlines()
    assert 'GPU ms' in table[1]
    assert table[2].split() == ['ours', '0.72', '1.00x', '2.48x', '0.240',
                                '2.00x']
    for r in results.values():
        del r['device_median_ms']
    assert 'GPU ms' not in tool.format_table(results, args)


def test_profile_tool_lists_where_the_time_goes(tmp_path):
    out = tmp_path / 'profile.json'
    result = run_tool('analysis_tools/profile_model.py', f'{DEMO}@bf16',
                      '--shape', 64, 128, '--batch', 2, '--train', '--rows',
                      8, '--json', out)
    assert 'training step, 2x3x64x128' in result.stdout
    rows = json.loads(out.read_text())['rows']
    assert len(rows) == 8
    assert any('convolution_backward' in row['name'] for row in rows)
    assert sorted((r['ms'] for r in rows), reverse=True) == \
        [r['ms'] for r in rows]
    assert 0 < sum(r['share'] for r in rows) <= 1 + 1e-6


def test_profile_tool_tells_kernel_time_from_idle_time():
    """Where a CUDA step's time goes besides its kernels: the idle gaps
    between them (overlapping kernels counted once) and before and after
    them, from the kernels' times (here made up, in microseconds)."""
    tool = tool_module('analysis_tools/profile_model.py')
    kernels = [(1100, 1400, 'b'), (1000, 1200, 'a'), (1300, 1350, 'c'),
               (1900, 2000, 'd'), (2010, 2500, 'e')]
    spent = tool.timeline(kernels, 800, 2600, count=2)
    assert spent == dict(
        step_ms=1.8, span_ms=1.5, busy_ms=0.99, idle_in_span_ms=0.51,
        before_first_kernel_ms=0.2, after_last_kernel_ms=0.1,
        longest_gaps=[dict(ms=0.5, after='b', before='d'),
                      dict(ms=0.01, after='d', before='e')])
    assert tool.timeline([], 0, 1) is None


def test_profile_tool_lists_operators_by_input_shapes(tmp_path):
    out = tmp_path / 'profile.json'
    run_tool('analysis_tools/profile_model.py', f'{DEMO}@bf16', '--shape',
             64, 128, '--rows', 1000, '--shapes', '--json', out)
    rows = json.loads(out.read_text())['rows']  # all of them
    # the input's shape names the first convolution's row
    assert any(row['name'].startswith('aten::') and '[1, 3, 64, 128]' in
               row['name'] for row in rows), [r['name'] for r in rows]
    names = [row['name'] for row in rows]
    assert len(names) == len(set(names))
    # one step recorded (after a warm-up step under the profiler), without
    # the profiler's marker of it: the stem's convolution called once
    # (aten::conv2d is listed twice under autocast: before and after the
    # cast to bfloat16)
    stem = [row['calls'] for row in rows if row['name'].startswith(
        'aten::convolution [[1, 3, 64, 128], [8, 3, 3, 3]')]
    assert stem == [1], [r['name'] for r in rows]
    assert not any(name.startswith('ProfilerStep') for name in names)


def test_profile_tool_lists_what_training_keeps_for_backward(tmp_path):
    out = tmp_path / 'memory.json'
    result = run_tool('analysis_tools/profile_model.py', f'{DEMO}@bf16',
                      '--shape', 64, 128, '--batch', 2, '--memory', '--rows',
                      50, '--json', out)
    assert 'MiB kept for backward' in result.stdout
    data = json.loads(out.read_text())
    rows = data['rows']
    assert data['total_bytes'] == sum(r['bytes'] for r in rows) > 0
    # the memory-efficient level MLPs keep their inputs; no PyTorch file
    # is named, the lines that called into it are
    assert any(r['name'].startswith('memory_efficient.py:') for r in rows)
    assert not any(r['name'].startswith(('functional.py', 'conv.py'))
                   for r in rows)
    assert sorted((r['bytes'] for r in rows), reverse=True) == \
        [r['bytes'] for r in rows]


def test_profile_tool_finds_what_is_allocated_at_the_peak():
    """--memory-peak's reading of the CUDA allocator's history (here made
    up): the step's peak over its allocations and frees, what was allocated
    and alive then, by the innermost frame outside PyTorch, and what each
    pool reserves and holds (a CUDA graph's pool after the default)."""
    tool = tool_module('analysis_tools/profile_model.py')
    torch_file = osp.join(tool.TORCH_DIR, 'nn', 'functional.py')

    def frames(line):
        return [dict(filename=torch_file, line=1, name='conv2d'),
                dict(filename='/x/head.py', line=line, name='forward'),
                dict(filename='/x/loop.py', line=9, name='step')]

    events = [
        dict(action='alloc', addr=1, size=100, frames=frames(3)),
        dict(action='alloc', addr=2, size=50, frames=frames(4)),
        dict(action='free_requested', addr=1, size=100),
        dict(action='free_completed', addr=1, size=100),
        dict(action='alloc', addr=3, size=120, frames=frames(3)),
        dict(action='free_completed', addr=0, size=500),  # from before
        dict(action='alloc', addr=4, size=200, frames=frames(5)),
        dict(action='segment_alloc', addr=9, size=10**6),
    ]
    peak, live = tool.trace_peak(events)
    assert peak == 170  # 50 + 120, before the earlier tensor was freed
    assert sorted(live) == [2, 3]
    assert tool.by_where(live.values()) == [
        dict(name='head.py:3 forward', calls=1, bytes=120),
        dict(name='head.py:4 forward', calls=1, bytes=50)]
    assert tool.where([dict(filename=torch_file, line=1, name='f')]) == \
        '(no Python frame outside PyTorch)'
    segments = [
        dict(segment_pool_id=(1, 0), total_size=1000, blocks=[
            dict(size=600, state='active_allocated', frames=frames(7)),
            dict(size=400, state='inactive')]),
        dict(segment_pool_id=(0, 0), total_size=300, blocks=[
            dict(size=100, state='active_allocated', frames=frames(8)),
            dict(size=100, state='active_pending_free', frames=frames(8)),
            dict(size=100, state='inactive')]),
        dict(segment_pool_id=(0, 0), total_size=200, blocks=[
            dict(size=200, state='active_allocated', frames=frames(8))]),
    ]
    assert tool.pools(segments) == [
        dict(pool='default', reserved_bytes=500, allocated_bytes=300,
             rows=[dict(name='head.py:8 forward', calls=2, bytes=300)]),
        dict(pool='(1, 0)', reserved_bytes=1000, allocated_bytes=600,
             rows=[dict(name='head.py:7 forward', calls=1, bytes=600)])]


def test_profile_tool_says_the_memory_peak_needs_cuda():
    result = run_tool('analysis_tools/profile_model.py', f'{DEMO}@bf16',
                      '--memory-peak', check=False)
    assert result.returncode != 0
    assert "--memory-peak reads the CUDA allocator's history: run it with " \
        '--device cuda' in result.stderr


def test_benchmark_focal_loss_compares_the_kernels_with_pytorch(tmp_path):
    """Both ways over the same logits (the kernels in Triton's interpreter,
    standing in for a GPU), each one's time in the table and the JSON."""
    pytest.importorskip(
        'triton', reason='Triton is not installed (requirements/tests.txt)')
    from mmseg_wavemix.ops import accuracy, log_softmax_gather

    from ..test_ops.triton_interpreter import interpreted
    tool = tool_module('analysis_tools/benchmark_focal_loss.py')
    out = tmp_path / 'focal.json'
    with interpreted(accuracy, log_softmax_gather) as module, \
            pytest.MonkeyPatch().context() as patch:
        patch.setattr(module, 'applies', lambda logits, labels: True)
        tool.main(['--shape', '1', '19', '8', '16', '--dtype', 'fp32',
                   '--channels-last', '--repeat', '1', '--warmup', '0',
                   '--json', str(out)])
    results = json.loads(out.read_text())['results']
    assert set(results) == {'triton', 'pytorch'}
    assert all(r['median_ms'] > 0 for r in results.values())
