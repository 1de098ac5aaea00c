# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Draw the results of ``tools/benchmark.py`` runs as bar charts, one row of
panels per JSON file: images per second for inference, and for a training
run also the step time and peak memory; and of
``tools/analysis_tools/benchmark_haar.py`` runs, the transform's time per
implementation. Each run's entries (one interleaved run) share their panels;
the device, batch and input size are in the titles.

Example:
    python tools/analysis_tools/plot_benchmarks.py \
        benchmarks/inference_1024x2048_cuda_h100_session14.json \
        benchmarks/train_b5_1024x2048_cuda_h100_memory_efficient.json \
        --out docs/images/h100.png
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List

from mmseg_wavemix.utils.checks import InputError, describe
from mmseg_wavemix.utils.cli import input_errors_in_one_line

AUTHORS = 'authors'
# the benchmark's entry options as words
OPTION_WORDS = {
    'fast': '--fast',
    'fast_train': 'FastTrainingHook',
    'no_fuse_mlp': 'no fused MLPs',
    'with_cp': 'with_cp',
    'channels_last': 'channels_last',
    'compile': 'compiled',
    'cuda_graphs': 'CUDA graphs',
    'keep_levels': 'kept levels',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Bar charts of tools/benchmark.py JSON results')
    parser.add_argument('json', nargs='+',
                        help='results of tools/benchmark.py')
    parser.add_argument('--out', required=True, help='the image to write')
    parser.add_argument('--title', help='a title above the panels')
    return parser.parse_args(argv)


def entry_label(spec: str, result: dict) -> str:
    """A short name of a benchmark entry: the authors' package, or the
    config's name (this project's marked '(ours)', MMSeg's the model's part
    of it), then its dtype and options."""
    path, _, options = spec.partition('@')
    name = osp.splitext(osp.basename(path))[0]
    if path == AUTHORS:
        name = "authors' wavemix==0.2.4"
    elif path.startswith('mmseg::'):
        name = '_'.join(name.split('_')[:2]) + ' (mmseg)'
    elif osp.basename(osp.dirname(path)) == 'wavemix':  # a config of ours
        name = 'ours'
    else:
        name = f'ours, {name}'
    # loop trains in the precision of the config's optim_wrapper (the
    # entry's dtype stays fp32)
    dtype = "config's dtype" if 'loop' in options.split(',') else \
        result.get('dtype', 'fp32')
    words = [dtype] + [
        OPTION_WORDS.get(o, o) for o in options.split(',')
        if o and o not in ('fp32', 'fp16', 'bf16')
    ]
    return f'{name}\n{", ".join(words)}'


def panels(data: dict) -> List[Dict]:
    """The panels of one benchmark run: a title, the quantity and, per
    entry that ran, its label and value."""
    if 'environment' not in data:  # benchmark_haar.py's
        return _haar_panels(data)
    settings, env = data['settings'], data['environment']
    device = env.get('cuda_device') or env.get('cpu') or 'CPU'
    h, w = settings['shape']
    where = f'batch {settings["batch"]} at {h}x{w}, {device}'
    modes = ['train'] if settings.get('train') else ['inference']
    quantities = {
        'inference': [('images_per_s', 'inference: images/s (higher is '
                       'better)', 1)],
        'train': [('median_s', 'training step: s (lower is better)', 1),
                  # the runs' MB are MiB (2**20 bytes)
                  ('peak_memory_mb', 'training peak memory: GiB (lower is '
                   'better)', 1 / 1024)],
    }
    out = []
    for mode in modes:
        for key, what, scale in quantities[mode]:
            bars = [(entry_label(spec, r), r[mode][key] * scale)
                    for spec, r in data['results'].items()
                    if r.get(mode, {}).get(key) is not None]
            if bars:
                out.append(dict(title=f'{what}\n{where}', bars=bars))
    return out


def _haar_panels(data: dict) -> List[Dict]:
    """The panels of a ``benchmark_haar.py`` run: forward + backward time of
    each implementation, wall time (the host's launches included) and, where
    the run took it, the GPU's own."""
    settings = data['settings']
    layout = 'channels_last' if settings.get('channels_last') else 'NCHW'
    where = (f'{"x".join(map(str, settings["shape"]))} {settings["dtype"]} '
             f'{layout}, {settings["device"]}')
    result = []
    for key, what in (('median_ms', 'ms'), ('device_median_ms', 'GPU ms')):
        bars = [(name, r[key]) for name, r in data['results'].items()
                if r.get(key) is not None]
        if bars:
            result.append(dict(title=f'Haar DWT forward + backward: {what} '
                               f'(lower is better)\n{where}', bars=bars))
    return result


def read_results(path: str) -> dict:
    """A results file of ``tools/benchmark.py`` or ``benchmark_haar.py``;
    anything else is an :class:`InputError` naming it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f'cannot read {path}: {describe(e)}') from e
    if not isinstance(data, dict) or not {'settings', 'results'} <= set(data):
        raise InputError(f'{path} is not the JSON of tools/benchmark.py or '
                         'benchmark_haar.py (no settings and results)')
    return data


def plot(paths: List[str], out: str, title: str = None) -> List[Dict]:
    """Write the panels of the runs in ``paths`` to the image ``out``;
    returns them."""
    import matplotlib
    matplotlib.use('Agg')  # files only
    import matplotlib.pyplot as plt

    rows = [panels(read_results(path)) for path in paths]
    rows = [row for row in rows if row]
    if not rows:
        raise SystemExit('error: no results to draw in ' + ', '.join(paths))
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(
        len(rows), columns, squeeze=False,
        figsize=(5.2 * columns, 0.6 + 2.4 * len(rows)))
    for row, row_axes in zip(rows, axes):
        for ax in row_axes[len(row):]:
            ax.axis('off')
        for panel, ax in zip(row, row_axes):
            labels = [label for label, _ in panel['bars']]
            values = [value for _, value in panel['bars']]
            colors = ['tab:gray' if label.startswith("authors'") else
                      'tab:blue' if label.startswith('ours') else
                      'tab:orange' for label in labels]
            ax.barh(range(len(values)), values, color=colors)
            ax.set_yticks(range(len(values)), labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(panel['title'], fontsize=8)
            ax.tick_params(axis='x', labelsize=8)
            for i, value in enumerate(values):
                ax.text(value, i, f' {value:.3g}', va='center', fontsize=8)
            ax.set_xlim(0, max(values) * 1.25)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches='tight')  # titles wider than a panel
    plt.close(fig)
    return [panel for row in rows for panel in row]


@input_errors_in_one_line
def main(argv=None):
    args = parse_args(argv)
    for panel in plot(args.json, args.out, args.title):
        print(panel['title'].replace('\n', ' | '))
        for label, value in panel['bars']:
            print(f'  {label.replace(chr(10), ", "):50s} {value:10.3f}')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
