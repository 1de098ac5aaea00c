# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The fastest of several ways to compute the same thing, timed on the
device at the first call of each problem size, as ``cudnn.benchmark`` times
cuDNN's algorithms."""
import statistics
import time
import warnings
from typing import Callable, Dict, Hashable

import torch
from mmengine.logging import print_log

# Timed calls of each candidate, interleaved, after one untimed call each.
ROUNDS = 3
# GPU cycles (about a millisecond) the queue is kept busy before each timed
# call: the host launches the call's kernels meanwhile, so the events time
# the GPU's work alone, as a CUDA graph replays it, not the launch overhead
QUEUED_CYCLES = 2_000_000


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of ``fn()``: GPU time by CUDA events, else wall time."""
    if device.type != 'cuda':
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    sleep = getattr(torch.cuda, '_sleep', None)  # private: it may go
    if sleep is not None:
        sleep(QUEUED_CYCLES)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def fastest(calls: Dict[str, Callable[[], object]], device: torch.device,
            cache: Dict[Hashable, str], key: Hashable, always: str,
            what: str) -> str:
    """The name of the call in ``calls`` found fastest for the problem
    ``key``, kept in ``cache`` (shared by the layers of that size, as a
    tuner's cache is).

    At the first call of ``key`` each candidate runs once untimed (a Triton
    kernel is tuned at its first call), then :data:`ROUNDS` times, the
    candidates interleaved, and the one of the least median time wins; the
    timing and its result are logged (``logger='current'``). A
    candidate that raises is left out with a warning, but ``always`` (the
    one that always serves), whose error is raised. Within a CUDA graph
    being recorded nothing can be timed: an untimed ``key`` takes
    ``always``.

    Args:
        calls (dict[str, Callable]): The candidates, by name, each
            computing the same result.
        device (torch.device): Where they run.
        cache (dict): The choices made so far, by ``key``.
        key (Hashable): The problem (device, dtype, sizes, layouts).
        always (str): The candidate that serves where nothing is timed.
        what (str): What they compute, for the log and the warnings.

    Returns:
        str: The name of the fastest call.
    """
    if key in cache:
        return cache[key]
    if device.type == 'cuda' and torch.cuda.is_current_stream_capturing():
        return always
    calls = dict(calls)
    print_log(f'{what}: timing {", ".join(calls)} (the first call of this '
              'size compiles and tunes the kernels)', logger='current')
    for name, call in list(calls.items()):
        try:
            call()
        except Exception as error:  # noqa: BLE001
            if name == always:
                raise
            warnings.warn(f'{what}: {name!r} failed, left out: '
                          f'{type(error).__name__}: {error}')
            del calls[name]
    times = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            times[name].append(time_ms(call, device))
    medians = {name: statistics.median(t) for name, t in times.items()}
    cache[key] = min(medians, key=medians.get)
    print_log(f'{what}: {cache[key]} serves ' + ', '.join(
        f'{name} {ms:.3f} ms' for name, ms in medians.items()),
              logger='current')
    return cache[key]
