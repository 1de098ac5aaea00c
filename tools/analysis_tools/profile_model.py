# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Where a model's time goes: the operators and kernels of an inference (or
training) step, by their own time on the device, from ``torch.profiler``;
on CUDA also the device's idle time between the kernels and around them.
With ``--memory``, where its training memory goes: what autograd keeps for
backward in one training step, by the source line that kept it. With
``--memory-peak`` (CUDA), what is allocated at the training step's peak, by
the source line that allocated it, and what each memory pool holds after it
(CUDA graphs keep pools of their own), from the CUDA allocator's history.

The entry is one of ``tools/benchmark.py`` (``CONFIG[@OPTIONS]``, e.g.
``@fp16,fast``), built and run the same way, with cuDNN's autotuning as in
training and testing.

Example:
    python tools/analysis_tools/profile_model.py \
        configs/wavemix/wavemix_256x16_l4_cityscapes.py@fp16,fast \
        --device cuda --shape 1024 2048 --train --batch 5
"""
import argparse
import os.path as osp
import pickle
import traceback
from collections import Counter

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.utils.analysis import write_json
from mmseg_wavemix.utils.benchmark import FLAGS, Bench, parse_entry
from mmseg_wavemix.utils.cli import input_errors_in_one_line, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Profile one step of a model by operator and kernel')
    parser.add_argument('config',
                        help='CONFIG[@OPTIONS], as tools/benchmark.py')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--shape', type=positive_int, nargs=2,
                        default=(512, 1024), metavar=('H', 'W'),
                        help='input size (default: 512 1024)')
    parser.add_argument('--batch', type=positive_int, default=1,
                        help='batch size')
    parser.add_argument('--train', action='store_true',
                        help='profile a training step, not an inference')
    parser.add_argument('--warmup', type=int, default=3,
                        help='steps before the profiled one (default: 3)')
    parser.add_argument('--rows', type=int, default=25,
                        help='rows of the table (default: 25)')
    parser.add_argument('--shapes', action='store_true',
                        help='operators by their input shapes (kernels '
                        'left out)')
    parser.add_argument('--no-cudnn-benchmark', action='store_true',
                        help="leave cuDNN's algorithm search off")
    parser.add_argument(
        '--memory', action='store_true',
        help='the activations a training step keeps for backward, by the '
        'source line that keeps them, not the time')
    parser.add_argument(
        '--memory-peak', action='store_true',
        help="what is allocated at a training step's peak and what each "
        "memory pool holds, by the source line that allocated it, from the "
        "CUDA allocator's history (CUDA only)")
    parser.add_argument(
        '--snapshot', help="with --memory-peak, also write the allocator's "
        'snapshot to this file (a pickle for torch.cuda._memory_viz)')
    parser.add_argument('--trace', help='write a Chrome trace to this file')
    parser.add_argument('--json', help='write the rows to this file')
    return parser.parse_args(argv)


def bench_args(args):
    """The namespace :class:`Bench` reads, with this tool's settings."""
    return argparse.Namespace(
        device=args.device, shape=args.shape, batch=args.batch,
        train=args.train, dtype='fp32', authors_package=None,
        **{flag: False for flag in FLAGS})


def profile_step(bench, train, warmup, shapes=False):
    """The profiler of one step of ``bench`` after ``warmup`` steps
    (recording the operators' input shapes if ``shapes``). The last warm-up
    step runs under the profiler too, unrecorded: on CUDA the profiler's own
    start (CUPTI's buffers, 2 ms on an H100) then falls outside the step."""
    step = bench.train_step if train else bench.infer
    for _ in range(warmup - 1):
        step()
    activities = [ProfilerActivity.CPU]
    if bench.device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    warm = min(warmup, 1)
    with profile(activities=activities, record_shapes=shapes,
                 schedule=schedule(wait=0, warmup=warm, active=1)
                 if warm else None) as prof:
        if warm:
            step()
            prof.step()  # from warm-up to recording
        step()
    return prof


def rows(prof, device, count, shapes=False):
    """The ``count`` events with the most time of their own on ``device``:
    name, calls, total ms and share of the step. On CUDA an operator's own
    time is that of the kernels it launched, which are rows too: the step's
    time is the kernels'. With ``shapes``, operators only, one row per
    operator and input shapes."""
    attr = 'self_device_time_total' if device == 'cuda' else \
        'self_cpu_time_total'
    events = [
        e for e in prof.key_averages(group_by_input_shape=shapes)
        if getattr(e, attr) > 0 and not e.key.startswith('ProfilerStep')
    ]  # not the schedule's marker of the step
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    total = sum(getattr(e, attr) for e in (kernels or events)) or 1
    if shapes:
        events = [e for e in events if e.device_type != DeviceType.CUDA]
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        dict(name=f'{e.key} {e.input_shapes}' if shapes else e.key,
             calls=e.count, ms=getattr(e, attr) / 1e3,
             share=getattr(e, attr) / total) for e in events[:count]
    ], total / 1e3


def timeline(kernels, step_start, step_end, count=5):
    """How the device spent a step, from its kernels' ``(start, end, name)``
    (microseconds) and the step's start and end on the host: the step's
    time, the span from the first kernel's start to the last one's end, the
    time some kernel ran in it (overlaps counted once), the idle time in it
    (launch latencies, waits on the host), before and after it, and the
    ``count`` longest idle gaps with the kernels around them, all in ms."""
    kernels = sorted(kernels)
    busy, end, last, gaps = 0., None, None, []
    for start, stop, name in kernels:
        if end is not None and start > end:
            gaps.append(dict(ms=(start - end) / 1e3, after=last, before=name))
        busy += max(0., stop - (start if end is None else max(start, end)))
        if end is None or stop > end:
            end, last = stop, name
    if not kernels:
        return None
    first = kernels[0][0]
    gaps.sort(key=lambda gap: gap['ms'], reverse=True)
    return dict(step_ms=(step_end - step_start) / 1e3,
                span_ms=(end - first) / 1e3,
                busy_ms=busy / 1e3,
                idle_in_span_ms=(end - first - busy) / 1e3,
                before_first_kernel_ms=(first - step_start) / 1e3,
                after_last_kernel_ms=max(0., step_end - end) / 1e3,
                longest_gaps=gaps[:count])


def device_timeline(prof):
    """:func:`timeline` of a profiled CUDA step (None without kernels)."""
    events = prof.events()
    kernels = [(e.time_range.start, e.time_range.end, e.name)
               for e in events if e.device_type == DeviceType.CUDA]
    host = [e.time_range for e in events if e.device_type == DeviceType.CPU]
    if not kernels or not host:
        return None
    return timeline(kernels, min(r.start for r in host),
                    max([r.end for r in host] + [k[1] for k in kernels]))


TORCH_DIR = osp.dirname(torch.__file__)


def saved_tensors_by_line(bench, warmup):
    """What autograd keeps for backward in a training step of ``bench``:
    each storage once, parameters left out, attributed to the innermost
    source line outside PyTorch. Returns the rows (bytes, count, line) and,
    on CUDA, the allocator's bytes kept after the forward and its peak over
    the step (both above the parameters, gradients and optimizer state)."""
    for _ in range(warmup):
        bench.train_step()
    seen, by_line, counts = set(), Counter(), Counter()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen and \
                not isinstance(tensor, torch.nn.Parameter):
            seen.add(storage.data_ptr())
            frames = [
                f for f in traceback.extract_stack()[:-1]
                if not f.filename.startswith(TORCH_DIR)
            ]
            frame = frames[-1]
            line = f'{osp.basename(frame.filename)}:{frame.lineno} ' \
                f'{(frame.line or "").strip()}'
            by_line[line] += storage.nbytes()
            counts[line] += 1
        return tensor

    cuda = bench.device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = bench.loss()
    kept = torch.cuda.memory_allocated() - base if cuda else None
    loss.backward()
    bench.optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    rows = [
        dict(name=line, calls=counts[line], bytes=nbytes)
        for line, nbytes in by_line.most_common()
    ]
    return rows, kept, peak


def main_memory(args, bench):
    rows, kept, peak = saved_tensors_by_line(bench, args.warmup)
    total = sum(r['bytes'] for r in rows) or 1
    for row in rows:
        row['share'] = row['bytes'] / total
    mib = 2**20
    print(f'{args.config}: training step, {args.batch}x3x{args.shape[0]}x'
          f'{args.shape[1]}, {total / mib:.1f} MiB kept for backward' +
          ('' if kept is None else
           f' (CUDA allocator: {kept / mib:.0f} MiB after the forward, '
           f'peak {peak / mib:.0f} MiB above the parameters and state)'))
    for row in rows[:args.rows]:
        print(f'{row["bytes"] / mib:10.1f} MiB {100 * row["share"]:5.1f}% '
              f'{row["calls"]:5d}x  {row["name"][:100]}')
    if args.json:
        write_json(args.json, dict(entry=args.config,
                                   mode='saved for backward',
                                   total_bytes=total,
                                   kept_after_forward_bytes=kept,
                                   peak_bytes=peak, rows=rows[:args.rows]),
                   indent=1)


def where(frames) -> str:
    """The innermost frame outside PyTorch of an allocation's stack (the
    allocator's frames, innermost first), as ``file.py:line function``."""
    for frame in frames or ():
        filename = frame.get('filename', '')
        if filename and filename != '??' and \
                not filename.startswith(TORCH_DIR):
            return f'{osp.basename(filename)}:{frame["line"]} ' \
                f'{frame["name"]}'
    return '(no Python frame outside PyTorch)'


def trace_peak(events):
    """The most bytes allocated at once over the CUDA allocator's trace
    ``events`` (an ``alloc`` adds its size, a ``free_completed`` takes it
    away, as ``torch.cuda._memory_viz`` counts), relative to before the
    first, and the allocations among them alive at that moment: ``(bytes,
    {address: (size, frames)})``."""
    now = peak = at = 0
    for i, event in enumerate(events):
        if event['action'] == 'alloc':
            now += event['size']
        elif event['action'] == 'free_completed':
            now -= event['size']
        if now > peak:
            peak, at = now, i + 1
    live = {}
    for event in events[:at]:
        if event['action'] == 'alloc':
            live[event['addr']] = event['size'], event.get('frames')
        elif event['action'] == 'free_completed':
            live.pop(event['addr'], None)
    return peak, live


def by_where(blocks):
    """``(size, frames)`` pairs summed by :func:`where`, the largest first:
    rows of name, calls and bytes."""
    nbytes, counts = Counter(), Counter()
    for size, frames in blocks:
        line = where(frames)
        nbytes[line] += size
        counts[line] += 1
    return [dict(name=line, calls=counts[line], bytes=size)
            for line, size in nbytes.most_common()]


def pools(segments):
    """What each memory pool of an allocator snapshot's ``segments``
    reserves and has allocated, and its allocated blocks by
    :func:`where`; the default pool first (CUDA graphs have their own)."""
    found = {}
    for segment in segments:
        pool_id = tuple(segment.get('segment_pool_id', (0, 0)))
        pool = found.setdefault(pool_id, dict(reserved=0, blocks=[]))
        pool['reserved'] += segment['total_size']
        pool['blocks'] += [(block['size'], block.get('frames'))
                           for block in segment['blocks']
                           if block['state'] == 'active_allocated']
    return [
        dict(pool='default' if pool_id == (0, 0) else str(pool_id),
             reserved_bytes=pool['reserved'],
             allocated_bytes=sum(size for size, _ in pool['blocks']),
             rows=by_where(pool['blocks']))
        for pool_id, pool in sorted(found.items(),
                                    key=lambda item: item[0] != (0, 0))
    ]


def main_memory_peak(args, bench):
    """:func:`trace_peak` of a training step after the warm-up steps (the
    history recorded from before them: CUDA graphs are recorded there) and
    the pools after it."""
    memory, index = torch.cuda.memory, bench.device.index or 0
    torch.cuda.synchronize()
    memory._record_memory_history(enabled='all', context='alloc',
                                  stacks='python', max_entries=10**7)
    try:
        for _ in range(args.warmup):
            bench.train_step()
        torch.cuda.synchronize()
        first = len(memory._snapshot()['device_traces'][index])
        start = torch.cuda.memory_allocated()
        bench.train_step()
        torch.cuda.synchronize()
        snapshot = memory._snapshot()
    finally:
        memory._record_memory_history(enabled=None)
    if args.snapshot:
        with open(args.snapshot, 'wb') as f:
            pickle.dump(snapshot, f)
    peak, live = trace_peak(snapshot['device_traces'][index][first:])
    rows = by_where(live.values())
    found = pools(snapshot['segments'])
    gib = 2**30
    print(f'{args.config}: training step, {args.batch}x3x{args.shape[0]}x'
          f'{args.shape[1]}: {start / gib:.2f} GiB allocated before it, '
          f'peak {(start + peak) / gib:.2f} GiB; at the peak, allocated in '
          'the step:')
    for row in rows[:args.rows]:
        print(f'{row["bytes"] / gib:8.3f} GiB {row["calls"]:5d}x  '
              f'{row["name"][:100]}')
    for pool in found:
        print(f'pool {pool["pool"]}: {pool["reserved_bytes"] / gib:.2f} GiB '
              f'reserved, {pool["allocated_bytes"] / gib:.2f} GiB allocated'
              ' after the step' + (', the most by' if pool['rows'] else ''))
        for row in pool['rows'][:5]:
            print(f'{row["bytes"] / gib:8.3f} GiB {row["calls"]:5d}x  '
                  f'{row["name"][:100]}')
    if args.json:
        write_json(args.json, dict(
            entry=args.config, mode='memory at the training step\'s peak',
            allocated_before_bytes=start, peak_bytes=start + peak,
            rows=rows[:args.rows],
            pools=[dict(pool, rows=pool['rows'][:args.rows])
                   for pool in found]), indent=1)


@input_errors_in_one_line
def main(argv=None):
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    if args.memory_peak and args.device != 'cuda':
        raise SystemExit('--memory-peak reads the CUDA allocator\'s history: '
                         'run it with --device cuda on a GPU (--memory '
                         'lists what training keeps for backward on any '
                         'device)')
    if args.memory or args.memory_peak:
        args.train = True
    bench = Bench(parse_entry(args.config, bench_args(args)), bench_args(args))
    if args.memory:
        return main_memory(args, bench)
    if args.memory_peak:
        return main_memory_peak(args, bench)
    prof = profile_step(bench, args.train, args.warmup, args.shapes)
    table, total_ms = rows(prof, args.device, args.rows, args.shapes)
    mode = 'training step' if args.train else 'inference'
    print(f'{args.config}: {mode}, {args.batch}x3x{args.shape[0]}x'
          f'{args.shape[1]}, {total_ms:.1f} ms of {args.device} time in all')
    width = 200 if args.shapes else 100
    for row in table:
        print(f'{row["ms"]:9.2f} ms {100 * row["share"]:5.1f}% '
              f'{row["calls"]:5d}x  {row["name"][:width]}')
    spent = device_timeline(prof) if args.device == 'cuda' else None
    if spent:
        print(f'The step: {spent["step_ms"]:.2f} ms on the host; its kernels '
              f'ran {spent["busy_ms"]:.2f} ms of a {spent["span_ms"]:.2f} ms '
              f'span ({spent["idle_in_span_ms"]:.2f} ms idle in it, '
              f'{spent["before_first_kernel_ms"]:.2f} before, '
              f'{spent["after_last_kernel_ms"]:.2f} after); the longest '
              'gaps:')
        for gap in spent['longest_gaps']:
            print(f'{gap["ms"]:9.3f} ms  after {gap["after"][:60]}, before '
                  f'{gap["before"][:60]}')
    if args.trace:
        prof.export_chrome_trace(args.trace)
    if args.json:
        write_json(args.json, dict(entry=args.config, mode=mode,
                                   total_ms=total_ms, rows=table,
                                   timeline=spent), indent=1)


if __name__ == '__main__':
    main()
