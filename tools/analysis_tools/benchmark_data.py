# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Time a config's training data path without its model: the train data
loader (its workers loading, transforming and packing) and the model's data
preprocessor (on CUDA: the copy to the device), once per ``--run
NAME=OPTIONS`` (config overrides), the runs' rounds interleaved.

Each round of a run starts its loader's workers, takes the batches they
make ahead (``num_workers x prefetch_factor``, untimed), times
``--batches`` batches as training takes them and stops the workers, so that
no other run's workers load meanwhile; the first round is a warm-up.
Reported: seconds a batch (median over the rounds), images/s, the
preprocessor's time on one batch alone, and the bytes of a batch's images
and labels.

Example (data made by tools/dataset_converters/make_demo_cityscapes.py):
    python tools/analysis_tools/benchmark_data.py \
        configs/wavemix/wavemix_256x16_l4_cityscapes.py data/cityscapes_1024 \
        --run uint8= \
        --run int64=train_dataloader.dataset.pipeline.3.type=PackSegInputs
"""
import argparse
import copy
import os
import statistics
import time

import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.utils.analysis import write_json
from mmseg_wavemix.utils.benchmark import environment
from mmseg_wavemix.utils.cli import (input_errors_in_one_line, read_config,
                                     unpin_without_cuda)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time a config's train data loader and data "
        'preprocessor')
    parser.add_argument('config', help='the training config')
    parser.add_argument('data_root', help="the training data's root")
    parser.add_argument(
        '--run', action='append', metavar='NAME=OPTIONS', dest='runs',
        help='a run\'s name and its config overrides ("key=value ..."), '
        'once per run (default: config=, the config as it is)')
    parser.add_argument('--batches', type=int, default=16,
                        help='timed batches per round (default: 16)')
    parser.add_argument('--rounds', type=int, default=4,
                        help='rounds per run, the first a warm-up '
                        '(default: 4)')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu',
        help="the preprocessor's device (default: cuda where there is one)")
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='key=value overrides for every run')
    parser.add_argument('--json', help='write the results to this file')
    args = parser.parse_args(argv)
    args.runs = args.runs or ['config=']
    for run in args.runs:
        name, _, options = run.partition('=')
        if not name or any('=' not in o for o in options.split()):
            parser.error(f'--run {run!r}: give NAME=OPTIONS, the options '
                         'key=value separated by spaces (config= for none)')
    if args.rounds < 2 or args.batches < 1:
        parser.error('give --rounds 2 or more (the first is a warm-up) '
                     'and --batches 1 or more')
    return args


class DataPath:
    """One run: the train data loader and the data preprocessor of a
    config with overrides."""

    def __init__(self, args, options: str):
        cfg = read_config(args.config)
        # values parsed as --cfg-options parses them
        cfg.merge_from_dict({
            key: DictAction._parse_iterable(value)
            for key, value in (o.split('=', 1)
                               for o in args.cfg_options + options.split())
        })
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        if torch.device(args.device).type != 'cuda':  # as tools/train.py does
            unpin_without_cuda(cfg)
        loader_cfg = copy.deepcopy(cfg.train_dataloader)
        loader_cfg.dataset.data_root = args.data_root
        # no epoch's end within a round; its workers stopped at its end
        loader_cfg.sampler = dict(type='InfiniteSampler', shuffle=True)
        loader_cfg.persistent_workers = False
        self.ahead = loader_cfg.get('num_workers', 0) * (
            loader_cfg.get('prefetch_factor') or 2)
        self.loader_cfg = loader_cfg
        self.device = torch.device(args.device)
        self.preprocessor = MODELS.build(cfg.model.data_preprocessor).to(
            self.device)
        self.batch = None

    def time_round(self, batches: int) -> float:
        """Seconds a batch over ``batches`` batches, after those made
        ahead."""
        # a loader of its own (the infinite sampler's indices end with the
        # first iterator), each round the same images
        loading = iter(
            Runner.build_dataloader(copy.deepcopy(self.loader_cfg), seed=0))
        for _ in range(self.ahead):
            next(loading)
        start = time.perf_counter()
        for _ in range(batches):
            self.batch = next(loading)
            self.preprocessor(self.batch, True)
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
        seconds = (time.perf_counter() - start) / batches
        del loading  # its workers stop
        return seconds

    def preprocessor_s(self, repeat: int = 5) -> float:
        """The preprocessor's time on the last batch alone (median)."""
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            self.preprocessor(self.batch, True)
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def sizes(self) -> dict:
        """MiB (2^20 bytes) of the last batch's images and labels."""
        labels = [
            s.gt_sem_seg.data for s in self.batch['data_samples']
            if 'gt_sem_seg' in s
        ]
        return dict(
            images=len(self.batch['inputs']),
            inputs_mb=sum(t.nbytes for t in self.batch['inputs']) / 2**20,
            labels_mb=sum(t.nbytes for t in labels) / 2**20,
            labels_dtype=str(labels[0].dtype) if labels else None)


def run(args) -> dict:
    options, paths = {}, {}
    for run in args.runs:
        name, _, options[name] = run.partition('=')
        paths[name] = DataPath(args, options[name])
    rounds = {name: [] for name in paths}
    for r in range(args.rounds):
        for name, path in paths.items():
            seconds = path.time_round(args.batches)
            print(f'round {r + 1}/{args.rounds} {name}: {seconds:.3f} s a '
                  'batch' + (' (warm-up)' if r == 0 else ''), flush=True)
            if r:
                rounds[name].append(seconds)
    results = {}
    for name, path in paths.items():
        median = statistics.median(rounds[name])
        results[name] = dict(
            options=options[name].split(),
            batch_s=median, min_s=min(rounds[name]), max_s=max(rounds[name]),
            preprocessor_s=path.preprocessor_s(),
            num_workers=path.loader_cfg.get('num_workers', 0),
            pin_memory=path.loader_cfg.get('pin_memory', False),
            **path.sizes())
        results[name]['images_per_s'] = results[name]['images'] / median
    data = dict(
        config=args.config, data_root=args.data_root, batches=args.batches,
        rounds=args.rounds, cores=os.cpu_count(), **environment(args),
        results=results)
    if args.json:
        write_json(args.json, data)
    print(f"\n{'run':16s} {'batch':>9s} {'images/s':>9s} {'preprocessor':>13s}"
          f" {'images':>9s} {'labels':>9s}")
    for name, r in results.items():
        print(f'{name:16s} {r["batch_s"]:8.3f}s {r["images_per_s"]:9.1f} '
              f'{r["preprocessor_s"] * 1e3:10.1f} ms {r["inputs_mb"]:6.1f} MiB'
              f' {r["labels_mb"]:6.1f} MiB ({r["labels_dtype"]})')
    return data


@input_errors_in_one_line
def main(argv=None):
    run(parse_args(argv))


if __name__ == '__main__':
    main()
