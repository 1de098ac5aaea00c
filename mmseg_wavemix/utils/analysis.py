# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Models built from configs for analysis (FLOPs, benchmarks), shared by
tools/analysis_tools/get_flops.py and tools/benchmark.py, and the timing
arguments of the benchmark tools."""
import argparse
import json
import math
from typing import Optional, Tuple

import torch
from mmengine.config import Config

from mmseg_wavemix.engine.atomic_local_backend import write_atomically

from .cli import check_model, positive_int, read_config


def add_timing_args(parser: argparse.ArgumentParser, repeat: int,
                    warmup: int) -> None:
    """``--device``, ``--repeat``, ``--warmup``, ``--threads`` and ``--json``,
    as tools/benchmark.py and tools/analysis_tools/benchmark_haar.py take
    them (``repeat`` and ``warmup`` are the tool's defaults)."""
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeat', type=positive_int, default=repeat,
                        help=f'timed rounds (default: {repeat})')
    parser.add_argument('--warmup', type=int, default=warmup,
                        help=f'untimed rounds first (default: {warmup})')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads on CPU (default: torch default)')
    parser.add_argument('--json', help='write the results to this file')


def write_json(path: str, data: dict, indent: int = 2) -> None:
    """Write a tool's results to ``path`` (its folder made if missing), in
    one step: a run killed while writing leaves the previous file whole."""
    write_atomically(path, json.dumps(data, indent=indent).encode())


def build_model_from_config(
        config: str,
        cfg_options: Optional[dict] = None) -> Tuple[Config, torch.nn.Module]:
    """Load ``config`` (``mmseg::`` / ``mmpretrain::`` paths work), merge
    ``cfg_options`` (e.g. ``{'model.backbone.with_cp': True}``) and build its
    model with the registry of the config's scope. SyncBN becomes BN: it
    needs a process group and computes like BN in one process. The weights
    are not initialised from any pretrained checkpoint."""
    cfg = read_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg, check_model(cfg)


def count_flops(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward pass (mmengine's counter, as mmseg's
    get_flops.py), with attention through
    ``F.scaled_dot_product_attention`` counted too (mmengine's counter
    skips it)."""
    from mmengine.analysis import FlopAnalyzer
    model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (inputs, ))
        analyzer.set_op_handle('aten::scaled_dot_product_attention',
                               _attention_flops)
        analyzer.unsupported_ops_warnings(False)
        return analyzer.total()


def _attention_flops(inputs: list, outputs: list) -> int:
    """Multiply-adds of ``softmax(q k^T) v``: (..., Lq, d) x (..., Lk, d)
    and (..., Lq, Lk) x (..., Lk, dv)."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(value) for value in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])
