# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The parts of ``tools/benchmark.py`` that build and measure one entry: its
model (:class:`Bench`), a timed step, peak memory in a fresh process, the
GEMM peak of the machine and what the numbers depend on."""
import copy
import gc
import multiprocessing
import os
import platform
import statistics
import time
import warnings
from contextlib import nullcontext
from types import SimpleNamespace

try:
    import resource
except ImportError:  # Windows: CPU time and page faults are left out
    resource = None

import torch
import torch.nn.functional as F

from mmseg_wavemix.models.accel import (TrainingCUDAGraphs,
                                        cpu_has_bf16_convolution,
                                        fold_head_classifier, fuse_conv_gelu,
                                        fuse_norm_layers,
                                        prepare_for_inference,
                                        prepare_for_training)
from mmseg_wavemix.models.decode_heads import WaveMixHead
from mmseg_wavemix.models.utils import wavemix_convert

from .analysis import build_model_from_config, count_flops
from .authors_wavemix import build_authors_segmenter
from .checks import describe, has_transform, is_type
from .cli import check_model, read_config

DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
FLAGS = ('channels_last', 'fuse_norm', 'fold_classifier', 'fuse_activation',
         'fast', 'no_fuse_mlp', 'fast_train', 'cuda_graphs', 'keep_levels',
         'loop', 'compile', 'with_cp')
AUTHORS = 'authors'


def parse_entry(spec, args):
    """``CONFIG[@opt,opt]`` -> dict(spec, path, dtype, <flags>)."""
    path, _, options = spec.partition('@')
    entry = dict(spec=spec, path=path, dtype=args.dtype,
                 **{flag: getattr(args, flag) for flag in FLAGS})
    for option in filter(None, options.split(',')):
        if option in DTYPES:
            entry['dtype'] = option
        elif option in FLAGS:
            entry[option] = True
        else:
            raise SystemExit(
                f'error: unknown option {option!r} in entry {spec!r}; use '
                f'{", ".join((*DTYPES, *FLAGS))}')
    if entry['no_fuse_mlp'] and not entry['fast']:
        raise SystemExit('error: no_fuse_mlp changes a step of fast; add '
                         f'fast to {spec!r}')
    for option in ('cuda_graphs', 'keep_levels'):
        if entry[option] and not entry['fast_train']:
            raise SystemExit(f'error: {option} changes a step of fast_train; '
                             f'add fast_train to {spec!r}')
    if entry['fast']:
        entry['channels_last'] = True
    if path == AUTHORS and entry['with_cp']:
        raise SystemExit("error: the authors' model has no with_cp")
    if entry['loop'] and (path == AUTHORS or entry['dtype'] != 'fp32'):
        raise SystemExit(
            "error: loop trains a config's model in the precision of its "
            'optim_wrapper (AMP on CUDA where it is an AmpOptimWrapper); '
            f'leave out the dtype in {spec!r}')
    return entry


class Bench:
    """One entry's model, inputs and timed steps."""

    def __init__(self, entry, args):
        self.entry = entry
        self.name = entry['spec']
        self.args = args
        self.device = torch.device(args.device)
        self.authors = entry['path'] == AUTHORS
        if self.authors:
            self.cfg, _ = load_main_config(args)
            self.model = build_authors_segmenter(self.cfg.model,
                                                 args.authors_package)
        else:
            self.cfg = read_config(entry['path'])
            if entry['with_cp']:
                self.cfg.merge_from_dict(self._with_cp_options(self.cfg))
            self.model = check_model(self.cfg)
        self.scope = self.cfg.get('default_scope', 'mmseg')
        self.model.to(self.device)
        self.infer_model = self.model
        if any(entry[flag] for flag in ('fast', 'fuse_norm', 'fold_classifier',
                                        'fuse_activation')):
            self.infer_model = copy.deepcopy(self.model).eval()
        if entry['fast']:
            # its own compile: Inductor's kernels inside its CUDA graphs
            prepare_for_inference(
                self.infer_model,
                compile=entry['compile'],
                fuse_mlp=False if entry['no_fuse_mlp'] else None)
        if entry['fast_train']:
            prepare_for_training(self.model,
                                 cuda_graphs=entry['cuda_graphs'],
                                 keep_levels=entry['keep_levels'])
        if entry['fuse_norm']:
            fuse_norm_layers(self.infer_model)
        if entry['fold_classifier']:
            head = getattr(self.infer_model, 'decode_head', None)
            if not isinstance(head, WaveMixHead):
                raise ValueError('fold_classifier needs a WaveMixHead, got '
                                 f'{type(head).__name__}')
            fold_head_classifier(head)
        if entry['fuse_activation']:
            fuse_conv_gelu(self.infer_model)
        h, w = args.shape
        self.inputs = torch.randn(args.batch, 3, h, w, device=self.device)
        if entry['channels_last']:
            for model in {self.model, self.infer_model}:
                model.to(memory_format=torch.channels_last)
            self.inputs = self.inputs.to(memory_format=torch.channels_last)
        self.infer_forward = self.infer_model if entry['fast'] else \
            self._maybe_compile(self.infer_model)
        self.train_forward = self._maybe_compile(self.model) \
            if self.infer_model is not self.model else self.infer_forward
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-6)
        self.trained = False  # no training step run yet
        if entry['loop']:
            self._build_loop()

    def _build_loop(self):
        """What ``loop`` runs: the config's optimizer wrapper (and its
        ``NonFiniteLossHook``, as the runner would put it), and a batch as
        the data loader gives it (uint8 images, and labels as the config's
        pipeline packs them, on the host)."""
        if self.scope != 'mmseg':
            raise ValueError('loop times segmentation configs')
        from mmengine.optim import build_optim_wrapper
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        from mmseg_wavemix.compat import resolve_amp
        from mmseg_wavemix.engine import NonFiniteLossHook
        self.optim_wrapper = build_optim_wrapper(
            self.model, resolve_amp(self.cfg.optim_wrapper))
        if any(is_type(hook, 'NonFiniteLossHook')
               for hook in self.cfg.get('custom_hooks', [])):
            NonFiniteLossHook().before_train(
                SimpleNamespace(optim_wrapper=self.optim_wrapper))
        h, w = self.args.shape
        classes = self.cfg.model.decode_head.num_classes
        labels = torch.uint8 if has_transform(
            self.cfg.get('train_dataloader', {}).get('dataset'),
            'PackSegInputsUint8') else torch.int64
        self.batch = dict(
            inputs=[
                torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
                for _ in range(self.args.batch)
            ],
            data_samples=[
                SegDataSample(
                    gt_sem_seg=PixelData(
                        data=torch.randint(
                            0, classes, (1, h, w), dtype=labels)),
                    metainfo=dict(ori_shape=(h, w), img_shape=(h, w),
                                  pad_shape=(h, w)))
                for _ in range(self.args.batch)
            ])

    @staticmethod
    def _with_cp_options(cfg):
        """The config overrides of ``with_cp`` (which replaces a WaveMix's
        memory_efficient)."""
        options = {'model.backbone.with_cp': True}
        if 'memory_efficient' in cfg.model.get('backbone', {}):
            options['model.backbone.memory_efficient'] = False
        return options

    def _maybe_compile(self, model):
        if not self.entry['compile']:
            return model
        # CUDA graphs for inference on a GPU: what removes the kernel launch
        # overhead at batch 1
        mode = 'reduce-overhead' if self.device.type == 'cuda' and \
            not self.args.train else None
        return torch.compile(model, mode=mode)

    def autocast(self):
        dtype = DTYPES[self.entry['dtype']]
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def data_samples(self):
        h, w = self.args.shape
        if self.scope == 'mmpretrain':
            from mmpretrain.structures import DataSample
            classes = self.cfg.model.head.num_classes
            return [
                DataSample().set_gt_label(torch.randint(0, classes, (1, )))
                for _ in range(self.args.batch)
            ]
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        classes = self.cfg.model.decode_head.num_classes
        return [
            SegDataSample(
                gt_sem_seg=PixelData(data=torch.randint(
                    0, classes, (1, h, w), device=self.device)),
                metainfo=dict(img_shape=(h, w), pad_shape=(h, w)))
            for _ in range(self.args.batch)
        ]

    def sync(self):
        # when the host had launched all of the step's work
        self.launched_at = time.perf_counter()
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def logits(self):
        # switched only when needed: a mode switch walks every submodule
        # (0.8 ms of host time for WaveMix on our CI CPU), which a test loop
        # does once
        if self.infer_model.training:
            self.infer_model.eval()
        with torch.no_grad(), self.autocast():
            if self.authors:
                out = self.infer_forward(self.inputs)
            else:
                out = self.infer_forward(self.inputs, mode='tensor')
        self.sync()
        return out

    def infer(self):
        self.logits()

    def loss(self):
        """The training loss of one forward (the model in training mode)."""
        if not self.model.training:
            self.model.train()
        samples = self.data_samples()
        with self.autocast():
            if self.authors:
                logits = self.train_forward(self.inputs)
                target = torch.stack([s.gt_sem_seg.data[0] for s in samples])
                return F.cross_entropy(logits.float(), target)
            losses = self.train_forward(self.inputs, samples, mode='loss')
            return sum(v for k, v in losses.items() if 'loss' in k)

    def train_step(self):
        # training CUDA graphs are recorded at a model's second step (the
        # first, eager, notes the parts called): the first call runs both,
        # and fails where they were not recorded (the entry's rows would be
        # the eager step's)
        records = self.entry['cuda_graphs'] and not self.trained
        self.trained = True
        if not records:
            self._train_step()
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for _ in range(2):
                self._train_step()
        for w in caught:  # said as they would have been
            warnings.warn_explicit(w.message, w.category, w.filename,
                                   w.lineno)
        if self.device.type == 'cuda':
            check_training_graphs_recorded(self.model, caught)

    def _train_step(self):
        if self.entry['loop']:
            if not self.model.training:
                self.model.train()
            log_vars = self.model.train_step(self.batch, self.optim_wrapper)
            # the loop's RuntimeInfoHook reads each logged value on the host
            for value in log_vars.values():
                value.item()
        else:
            self.loss().backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.sync()

    def flops(self):
        return count_flops(self.infer_model, self.inputs[:1])


def check_training_graphs_recorded(model: torch.nn.Module,
                                   caught: list) -> None:
    """Raise unless the parts of ``model`` that train as CUDA graphs
    (:func:`~mmseg_wavemix.models.accel.training_cuda_graphs`) recorded
    them (a part the step did not call has none), with the reason among the
    warnings ``caught`` meanwhile."""
    recorded = [
        graph for m in model.modules()
        if isinstance(m.forward, TrainingCUDAGraphs)
        for graph in m.forward.graphs.values()
    ]
    if recorded and None not in recorded:
        return
    reasons = [
        str(w.message) for w in caught
        if str(w.message).startswith('CUDA graphs')
    ]
    raise RuntimeError('the training CUDA graphs were not recorded' +
                       (f': {reasons[0]}' if reasons else ''))


def timed(step, bench=None):
    """Wall time of ``step()`` in seconds, and what else was measured
    meanwhile: the process's CPU time and page faults (where ``resource``
    is there) and, for a step of ``bench``, ``host_s``, the time until the
    host had launched all of the step's work (before it waits for the
    device)."""
    before = resource.getrusage(resource.RUSAGE_SELF) if resource else None
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    usage = {}
    if bench is not None:
        usage['host_s'] = bench.launched_at - start
    if before is not None:
        after = resource.getrusage(resource.RUSAGE_SELF)
        usage.update(user_s=after.ru_utime - before.ru_utime,
                     kernel_s=after.ru_stime - before.ru_stime,
                     page_faults=after.ru_minflt - before.ru_minflt)
    return elapsed, usage


def load_main_config(args):
    """The first entry's config (the authors' model takes its sizes)."""
    path = args.config.partition('@')[0]
    if path == AUTHORS:
        raise SystemExit('error: the first entry must be a config; '
                         '`authors` takes its sizes from it')
    return read_config(path), path


def peak_memory(entry, args, modes):
    """Peak memory of one step of each of ``modes`` (``'inference'``,
    ``'train'``), as :func:`_peak_of_step` gives it, in fresh processes: on
    CUDA one for all the modes (the allocator's counts start again for each;
    a process's start, about 20 s for the recipe's model on an H100, was
    most of a training benchmark's time), on CPU one per mode (the resident
    set would keep what the allocator kept of the mode before). Training
    recorded as CUDA graphs has a process of its own: ``tools/train.py``
    records them at the first step, before any inference, and recorded
    after an inference step they held more (on an H100 in session 26, the
    demo model: 574 MB against 424 MB alone). A mode that failed gives its
    error's description instead."""
    together = args.device == 'cuda' and not entry.get('cuda_graphs')
    groups = [list(modes)] if together else [[m] for m in modes]
    context = multiprocessing.get_context('spawn')
    peaks = {}
    for group in groups:
        with context.Pool(1) as pool:
            peaks.update(
                pool.apply(_peak_memory_worker, (entry, args, group)))
    return peaks


def _peak_memory_worker(entry, args, modes):
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    bench = Bench(entry, args)
    peaks = {}
    for mode in modes:
        try:
            peaks[mode] = _peak_of_step(bench, mode == 'train')
        except Exception as e:  # noqa: B902  (reported in the mode's place)
            peaks[mode] = describe(e)[:300]
    return peaks


def _peak_of_step(bench, train):
    """``peak_memory_mb`` of a step (MB above what the process held before
    it); for CUDA graphs of training also ``replay_peak_memory_mb``, that
    of a replayed step alone (``peak_memory_mb`` is the larger of it and
    the recording's)."""
    step = bench.train_step if train else bench.infer
    if bench.device.type == 'cuda':
        gc.collect()
        torch.cuda.empty_cache()  # what a mode before left cached
        if bench.entry['cuda_graphs'] and train:
            # a recorded step allocates nothing: its activations stay in the
            # graphs' memory, which the allocator counts as reserved. The
            # first call records (after an eager step and the warm-up
            # steps), the second replays: its peak alone, after the
            # recording's cache is freed, is what training holds from then
            # on.
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_reserved()
            step()
            recording = torch.cuda.max_memory_reserved() - base
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            step()
            replay = torch.cuda.max_memory_reserved() - base
            return dict(peak_memory_mb=max(recording, replay) / 2**20,
                        replay_peak_memory_mb=replay / 2**20)
        # after one step: cuDNN's algorithm search (cudnn.benchmark) tries
        # large workspaces in the first
        step()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return dict(peak_memory_mb=(torch.cuda.max_memory_allocated() -
                                    base) / 2**20)
    gc.collect()
    _reset_peak_rss()
    base = _proc_status_kib('VmRSS')
    step()
    return dict(peak_memory_mb=max(_proc_status_kib('VmHWM') - base, 0) /
                1024)


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux
    >= 4.0); ru_maxrss cannot be used, it keeps the parent's peak across
    fork and exec."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _proc_status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def summary(times, usages, batch, device='cpu'):
    """Latency statistics; with CPU usage, the kernel's share of the CPU
    time (on CPU mostly page faults: memory the allocator returned to the OS
    and took back) and the page faults per step; on CUDA, the host's share
    of the step: the median time until the host had launched the step's
    work over the median step (near 1, the device waits on the host)."""
    median = statistics.median(times)
    result = dict(median_s=median, min_s=min(times), max_s=max(times),
                  images_per_s=batch / median)
    if device == 'cuda' and usages and all('host_s' in u for u in usages):
        result['host_share'] = statistics.median(
            u['host_s'] for u in usages) / median
    if usages and all('kernel_s' in u for u in usages):
        kernel = sum(u['kernel_s'] for u in usages)
        cpu = kernel + sum(u['user_s'] for u in usages)
        result['kernel_cpu_share'] = kernel / cpu if cpu else 0.
        result['page_faults'] = statistics.median(
            u['page_faults'] for u in usages)
    return result


def authors_parity(bench, args):
    """Largest |difference| between the authors' logits and ours (fp32, the
    authors' weights converted with ``wavemix_convert``)."""
    _, ours = build_model_from_config(load_main_config(args)[1])
    ours.load_state_dict(wavemix_convert(bench.model.state_dict()))
    ours.to(bench.device).eval()
    bench.model.eval()
    inputs = bench.inputs.contiguous()
    with torch.no_grad():
        return (bench.model(inputs) -
                ours(inputs, mode='tensor')).abs().max().item()


def gemm_peak_gflops(dtype, device, repeat=5):
    """Best throughput of a large GEMM, run as a 1x1 convolution in
    channels_last (oneDNN on CPU, cuDNN on GPU: the library the models'
    convolutions use), in GFLOP/s (2 per multiply-add). On GPU it is large
    enough (0.5 TFLOP) for tensor cores to reach their peak."""
    channels, size = (4096, 128) if device.type == 'cuda' else (1024, 64)
    x = torch.randn(1, channels, size, size, device=device, dtype=dtype)
    weight = torch.randn(channels, channels, 1, 1, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous(memory_format=torch.channels_last)
    best = float('inf')
    with torch.no_grad():
        for round_ in range(repeat + 1):
            start = time.perf_counter()
            F.conv2d(x, weight)
            if x.is_cuda:
                torch.cuda.synchronize()
            if round_:  # the first round is warm-up
                best = min(best, time.perf_counter() - start)
    return 2 * channels**2 * size**2 / best / 1e9


def environment(args):
    """What the numbers depend on, for the JSON file."""
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=cpu,
        cpu_bf16_convolution=cpu_has_bf16_convolution(),
        cuda_device=torch.cuda.get_device_name()
        if args.device == 'cuda' else None,
        cuda=torch.version.cuda if args.device == 'cuda' else None,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        glibc_tunables=os.environ.get('GLIBC_TUNABLES'))
