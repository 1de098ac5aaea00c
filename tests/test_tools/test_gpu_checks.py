# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/gpu_checks.sh, the one run a GPU session has, here with its Python
commands stood in for by a script: a step still running at the deadline is
cut, later ones are not started, and the summary names them and the SKIP
that runs them in a second call."""
import json
import os
import shlex
import subprocess
import sys
import tarfile
import textwrap

from ..conftest import REPO_ROOT
from .demo_data import tool_module

SCRIPT = os.path.join(REPO_ROOT, 'tools', 'gpu_checks.sh')


def fake_python(tmp_path, slow):
    """A ``python3`` that passes its checks (``-c``), runs the summary (a
    script on stdin) with this interpreter, sleeps in a command containing
    ``slow`` and ends every other one at once, logging what it was given."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    python = bin_dir / 'python3'
    python.write_text(
        textwrap.dedent(f"""\
            #!/usr/bin/env bash
            alloc="PYTORCH_CUDA_ALLOC_CONF=${{PYTORCH_CUDA_ALLOC_CONF:-}}"
            echo "$* ($alloc) (TRITON_CACHE_DIR=${{TRITON_CACHE_DIR:-}})" \\
                >> {tmp_path / 'calls'}
            case "$1" in
              -) exec {sys.executable} "$@";;
              -c) exit 0;;
            esac
            [[ "$*" == *"{slow}"* ]] && sleep 30
            exit 0
            """))
    python.chmod(0o755)
    return bin_dir


def test_a_step_at_the_deadline_is_cut_and_the_rest_named(tmp_path):
    slow = 'tools/benchmark.py configs/wavemix/wavemix_256x16_l4_cityscapes' \
        '.py@fp16,fast --compare'  # the inference step
    env = dict(os.environ, DEADLINE='3', MIN_STEP='1', SKIP='',
               STEP_NEEDS='',  # below: a step needing more is not started
               TMPDIR=str(tmp_path),  # the recipe's data made anew
               PATH=f'{fake_python(tmp_path, slow)}:{os.environ["PATH"]}')
    out = tmp_path / 'out'
    out.mkdir()  # a step's JSON, to be packed with ARCHIVE
    (out / 'haar.json').write_text(
        json.dumps(dict(results=dict(ours=dict(median_ms=0.5),
                                     clone=dict(median_ms=0.3,
                                                device_median_ms=0.12)))))
    # as benchmark.py saves it while measuring peak memory
    (out / 'train.json').write_text(json.dumps(dict(results=dict(ours=dict(
        train=dict(median_s=0.174, images_per_s=28.7, peak_memory_mb=8570,
                   host_share=0.93))), finished=False)))
    # as benchmark_recipe.py writes it
    (out / 'recipe.json').write_text(json.dumps(dict(results=dict(
        cuda_graphs=dict(train=dict(median_s=0.14, images_per_s=35.7,
                                    data_time_s=0.0031,
                                    peak_memory_mb=11500))))))
    # as profile_model.py --memory-peak writes it
    (out / 'memory.json').write_text(json.dumps(dict(
        peak_bytes=8 * 2**30, rows=[], pools=[
            dict(pool='default', reserved_bytes=9 * 2**30),
            dict(pool='(1, 0)', reserved_bytes=3 * 2**30)])))
    # as benchmark_data.py writes it
    (out / 'data.json').write_text(json.dumps(dict(results=dict(uint8=dict(
        batch_s=0.15, images_per_s=33.3, preprocessor_s=0.004,
        labels_mb=10.0)))))
    env['ARCHIVE'] = str(tmp_path / 'gpu.tar.gz')
    result = subprocess.run(['bash', SCRIPT, str(out)], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith('=== cut after') and slow in line
               for line in lines)
    assert '=== not started, 0 s left of DEADLINE=3 (it needs 1 s): Level ' \
        'MLPs, fp16 1024x2048' in lines  # the steps after the cut one
    assert 'Not finished by DEADLINE: focal haar inference level_mlp ' \
        'peers profile' in lines
    assert f'The rest, in a second call: SKIP="tests recipe data ' \
        f'training memory train_profile" bash tools/gpu_checks.sh {out}' \
        in lines
    calls = (tmp_path / 'calls').read_text().splitlines()
    tests = next(c for c in calls if c.startswith('-m pytest'))
    # the tests in their own Triton cache (their tunings are timed beside
    # other processes), and in 8 of them where pytest-xdist is installed
    assert '-n 8' in tests  # the stand-in says yes to `import xdist`
    assert tests.endswith('gpu_checks_triton_tests)')
    # the recipe, its options and the authors' training in one interleaved
    # run (the target's ratio), beside one entry of CUDA graphs only (their
    # memory is held through the run; the authors' step needs 55 GB)
    training = [
        c for c in calls if 'benchmark.py' in c and '--batch 5 --train' in c
        and 'expandable' not in c
    ]
    assert len(training) == 1
    assert ' authors ' in training[0]
    assert training[0].count('cuda_graphs') == 1
    # the graphed step with PyTorch's expandable segments, beside the
    # graphed step as tools/train.py runs it
    expandable, = (i for i, c in enumerate(calls)
                   if 'expandable_segments.json' in c)
    assert '@fp16,fast_train,cuda_graphs --compare ' in calls[expandable] \
        and '@fast_train,cuda_graphs,loop ' in calls[expandable] and \
        ' authors' not in calls[expandable] and \
        '(PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)' in \
        calls[expandable]
    # the training step, its memory and its profile before the inference
    # step (its targets are met)
    train = next(i for i, c in enumerate(calls)
                 if 'benchmark.py' in c and '--train' in c)
    memory = next(i for i, c in enumerate(calls) if '--memory-peak' in c)
    profile = next(i for i, c in enumerate(calls)
                   if 'profile_model.py' in c and '--train' in c)
    inference = next(i for i, c in enumerate(calls)
                     if 'benchmark.py' in c and '@fp16,fast ' in c)
    assert train < expandable < memory < profile < inference
    # before them, the recipe through tools/train.py on data made at
    # 1024x2048 (once), as configured, eager, and last (the one a deadline
    # cuts) with mmseg's int64 labels, each validating twice on 20 images
    made, converted, recipe = (
        next(i for i, c in enumerate(calls) if tool in c)
        for tool in ('make_demo_cityscapes.py', 'dataset_converters/'
                     'cityscapes.py', 'benchmark_recipe.py'))
    assert '--num-val 20 --size 1024 2048' in calls[made]
    assert made < converted < recipe < train
    assert calls[recipe].startswith(
        'tools/analysis_tools/benchmark_recipe.py configs/wavemix/'
        'wavemix_256x16_l4_cityscapes.py ')
    assert '--val-interval 30 --run recipe= --run eager=--no-cuda-graphs ' \
        '--run int64_labels=--cfg-options train_dataloader.dataset.' \
        'pipeline.3.type=PackSegInputs ' in calls[recipe]
    assert f'--json {out}/recipe_b5_1024x2048_cuda.json' in calls[recipe]
    # then the data path alone: pinned (the config's), int64 labels, unpinned
    data, = (i for i, c in enumerate(calls) if 'benchmark_data.py' in c)
    assert recipe < data < train
    assert '--run uint8_pinned= --run int64_pinned=train_dataloader.' \
        'dataset.pipeline.3.type=PackSegInputs --run uint8=train_dataloader.' \
        f'pin_memory=False --json {out}/data_b5_1024x2048_cuda.json' in \
        calls[data]
    assert 'uint8 150.0 ms a batch 33.3 img/s, preprocessor 4.0 ms, ' \
        'labels 10.0 MiB' in [
            ' '.join(line.split()) for line in lines]
    assert '  ours                         0.50 ms' in lines  # the summary
    # and the GPU's own time where the benchmark took it
    assert '  clone                        0.30 ms (GPU 0.120 ms)' in lines
    assert 'train.json (cut before its end)' in lines
    assert 'haar.json' in lines  # a file of a tool that does not say
    assert '  peak 8.00 GiB; pool default 9.00 GiB reserved, pool (1, 0) ' \
        '3.00 GiB reserved' in lines
    # the recipe's runs with their wait for data
    assert 'cuda_graphs train 140.0 ms 35.7 img/s 11500 MB data wait 3.1 ' \
        'ms' in [' '.join(line.split()) for line in lines]
    # with the host's share of the step
    assert 'ours train 174.0 ms 28.7 img/s 8570 MB host 93%' in [
        ' '.join(line.split()) for line in lines]
    # the seconds of each step that ran, to see what to trim
    times = next(line for line in lines
                 if line.startswith('Seconds per step: '))
    seconds = dict(
        item.split() for item in times.split(': ', 1)[1].split(', '))
    assert list(seconds) == ['tests', 'recipe', 'data', 'training',
                             'memory', 'train_profile', 'inference']
    assert int(seconds['inference']) >= 2  # cut at DEADLINE=3
    with tarfile.open(env['ARCHIVE']) as archive:
        assert sorted(archive.getnames()) == ['data.json', 'haar.json',
                                              'memory.json', 'recipe.json',
                                              'train.json']


def test_a_step_that_needs_more_than_is_left_waits_for_the_second_call(
        tmp_path):
    """A step given more seconds in STEP_NEEDS than are left is not started
    (cut early it would give nothing), the shorter steps after it run, and
    the second call is told to run it."""
    env = dict(os.environ, DEADLINE='60', MIN_STEP='1', SKIP='tests recipe',
               STEP_NEEDS='training:100', TMPDIR=str(tmp_path),
               PATH=f'{fake_python(tmp_path, "never")}:{os.environ["PATH"]}')
    out = tmp_path / 'out'
    result = subprocess.run(['bash', SCRIPT, str(out)], capture_output=True,
                            text=True, timeout=60, env=env)
    lines = result.stdout.splitlines()
    assert any(
        line.startswith('=== not started, ') and
        line.endswith("(it needs 100 s): Training 1024x2048, batch 5: the "
                      "recipe, its options and the authors'")
        for line in lines), result.stdout
    calls = (tmp_path / 'calls').read_text()
    assert ' authors ' not in calls  # the training table's entry
    assert '--memory-peak' in calls and 'benchmark_haar.py' in calls
    # the training step against the peer's, at its config's batch of one
    peers, = (c for c in calls.splitlines() if 'peers_cuda.json' in c)
    assert '@fp16,fast_train,cuda_graphs --compare configs/wavemix/' \
        'wavemix_256x16_l4_cityscapes.py@fp16,fast_train mmseg::segformer/' \
        'segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py@fp16 ' in peers
    assert '--batch 1 --train' in peers
    assert 'Not finished by DEADLINE: training' in lines
    rest = next(line for line in lines if line.startswith('The rest'))
    assert ' training ' not in f'{rest.split("SKIP=")[1].split(" bash")[0]} '


def test_every_command_of_a_full_run_parses(tmp_path):
    """Each tool that a full run starts (every optional step on) takes its
    arguments: its own parser, each benchmark entry's options and each
    recipe run's tools/train.py arguments. A misspelt option would otherwise
    cost a GPU session's call."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    python = bin_dir / 'python3'
    # logs its arguments as JSON, passes the checks (-c), runs the summary
    # (a script on stdin) and ends every tool at once
    python.write_text(
        textwrap.dedent(f"""\
            #!{sys.executable}
            import json, os, sys
            with open({str(tmp_path / 'calls.json')!r}, 'a') as f:
                f.write(json.dumps(sys.argv[1:]) + '\\n')
            if sys.argv[1] == '-':
                os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
            """))
    python.chmod(0o755)
    env = dict(os.environ, DEADLINE='1000', MIN_STEP='1', SKIP='',
               STEP_NEEDS='', TMPDIR=str(tmp_path), SWEEP='1',
               COMPILE_TRAIN='1', PLAIN='1', INFERENCE_ALL='1',
               PATH=f'{bin_dir}:{os.environ["PATH"]}')
    subprocess.run(['bash', SCRIPT, str(tmp_path / 'out')], env=env,
                   capture_output=True, text=True, timeout=120, check=True)
    calls = [json.loads(line)
             for line in (tmp_path / 'calls.json').read_text().splitlines()]
    tools = [call for call in calls if call[0].startswith('tools/')]
    assert len(tools) >= 20, calls
    benchmark = tool_module('benchmark.py')
    train = tool_module('train.py')
    parsed = set()
    for script, *argv in tools:
        name = script[len('tools/'):]
        tool = tool_module(name)
        args = tool.parse_args(argv)
        parsed.add(name)
        if name == 'benchmark.py':
            for spec in (args.config, *args.compare):
                benchmark.parse_entry(spec, args)
        elif name == 'analysis_tools/profile_model.py':
            benchmark.parse_entry(args.config, tool.bench_args(args))
        elif name == 'analysis_tools/benchmark_recipe.py':
            for run in args.runs:
                train.parse_args([args.config, *shlex.split(
                    run.partition('=')[2])])
    assert {'benchmark.py', 'analysis_tools/profile_model.py',
            'analysis_tools/benchmark_recipe.py',
            'analysis_tools/benchmark_data.py',
            'analysis_tools/benchmark_haar.py',
            'analysis_tools/benchmark_focal_loss.py',
            'analysis_tools/benchmark_level_mlp.py'} <= parsed
