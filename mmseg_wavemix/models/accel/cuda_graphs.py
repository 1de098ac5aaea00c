# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Inference, and training's forward and backward, replayed as CUDA graphs:
one launch instead of hundreds (thousands in training)."""
import copy
import os
import os.path as osp
import time
import traceback
import warnings
import weakref
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_leaves

# Parts of OpenMMLab models whose forward is a tensor function; each becomes
# one graph (a model without them is graphed as a whole).
GRAPHED_PARTS = ('backbone', 'neck', 'decode_head', 'head')
# and in training mmseg's auxiliary head (inference does not run it)
TRAINED_PARTS = GRAPHED_PARTS + ('auxiliary_head', )
# PyTorch's CUDA allocator settings, by their old and new names
ALLOCATOR_VARIABLES = ('PYTORCH_CUDA_ALLOC_CONF', 'PYTORCH_ALLOC_CONF')


class CUDAGraphs:
    """``fn`` replayed as a CUDA graph recorded once per input signature.

    At batch 1 WaveMix's kernels are short and the host cannot launch them as
    fast as the GPU runs them: the GPU waits. A graph launches them all at
    once. The first call with a new signature (shapes, strides, dtypes,
    autocast dtype) runs ``fn`` twice on a side stream, as cuDNN's algorithm
    search and Triton's compilation need, then records it; later calls copy
    the inputs into the recorded ones and replay.

    It applies to inference on CUDA: calls with gradients enabled, inputs
    that are not CUDA tensors, under tracing or compilation run ``fn``
    itself. ``fn`` must depend on its tensor inputs only (its parameters
    are read where they are when recorded: load weights in place, with
    ``load_state_dict``). Outputs are fresh tensors, not the graph's buffers.
    Each recording is logged (``logger='current'``) as it starts and ends:
    with the kernels tuned at a first call it can take a minute.

    Args:
        fn (Callable): A function of one tensor or one tuple/list of tensors
            that returns a tensor or a tuple/list of tensors (other calls run
            ``fn``).
        compile (bool): Record ``torch.compile(fn)`` (compiled at the first
            call of each signature). Default: False.
        max_graphs (int): Signatures recorded at most; each keeps its own
            activation memory. Further input sizes run ``fn``, with a
            warning the first time. Default: 4.
        name (str): What ``fn`` is, in the log. Default: ``'forward'``.
    """

    def __init__(self, fn: Callable, compile: bool = False,
                 max_graphs: int = 4, name: str = 'forward'):
        self.fn = fn
        self.name = name
        self.compile = compile
        # what is recorded; calls that are not replayed run `fn` itself
        self.recorded_fn = torch.compile(fn, dynamic=False) if compile \
            else fn
        self.max_graphs = max_graphs
        self.graphs: Dict[tuple, Tuple[torch.cuda.CUDAGraph, list,
                                       object]] = {}
        self._warned = False

    def __call__(self, *args, **kwargs):
        tensors = _replayable(args, kwargs)
        if torch.is_grad_enabled() or not tensors:
            return self.fn(*args, **kwargs)
        key = _signature(tensors)
        if not _room_for(
                self, key, f'CUDA graphs are recorded for {self.max_graphs} '
                'input sizes; others run without (pad or resize test images '
                'to a few sizes to get them)'):
            return self.fn(*args)
        if key not in self.graphs:
            print_log(
                f'CUDA graphs: recording the {self.name} for inputs '
                f'{_sizes(tensors)} '
                '(a first call of this size tunes the kernels: up to a '
                'minute)', logger='current')
            start = time.perf_counter()
            self.graphs[key] = self._record(args[0], tensors)
            print_log(
                f'CUDA graphs: recorded the {self.name} in '
                f'{time.perf_counter() - start:.1f} s', logger='current')
        graph, static_inputs, static_output = self.graphs[key]
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor)
        graph.replay()
        return _clone(static_output)

    def __deepcopy__(self, memo: dict) -> 'CUDAGraphs':
        # a copy of the model records graphs of its own: these read this
        # one's parameters and hold its static inputs
        return type(self)(
            copy.deepcopy(self.fn, memo), self.compile, self.max_graphs,
            self.name)

    def _record(self, inputs, tensors):
        static_inputs = [
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                device=t.device).copy_(t) for t in tensors
        ]
        static_args = static_inputs[0] if isinstance(inputs, Tensor) else \
            type(inputs)(static_inputs) if isinstance(inputs, tuple) else \
            static_inputs
        no_cache = _autocast_without_cache()
        stream = torch.cuda.Stream(tensors[0].device)
        stream.wait_stream(torch.cuda.current_stream(tensors[0].device))
        with torch.cuda.stream(stream), no_cache:
            for _ in range(2):
                self.recorded_fn(static_args)
        torch.cuda.current_stream(tensors[0].device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with no_cache, torch.cuda.graph(graph):
            static_output = self.recorded_fn(static_args)
        return graph, static_inputs, static_output


class _PartCall(nn.Module):
    """A part's forward of one tensor, tuple or list, as a module of the
    part's parameters; :meth:`given` records it with other tensors in their
    place."""

    def __init__(self, part: nn.Module, fn: Callable, kind: type):
        super().__init__()
        self.part = part
        self.fn = fn
        self.kind = kind
        # shared parameters once, as functional_call ties them
        self.names = [name for name, _ in self.named_parameters()]

    def forward(self, *tensors: Tensor):
        return self.fn(tensors[0] if self.kind is Tensor else self.kind(
            tensors))

    def given(self, *tensors: Tensor):
        """The forward with other tensors in the parameters' places:
        ``tensors`` are the inputs, then one tensor per parameter (in the
        order of ``named_parameters``)."""
        inputs = len(tensors) - len(self.names)
        return torch.func.functional_call(
            self, dict(zip(self.names, tensors[inputs:])), tensors[:inputs])


def _slot(module: nn.Module, name: str, kind: str) -> tuple:
    """The dict of ``module``'s submodule that holds the parameter or buffer
    ``name`` (``kind``: ``'_parameters'`` or ``'_buffers'``), and its key
    there."""
    owner, _, leaf = name.rpartition('.')
    return getattr(module.get_submodule(owner), kind), leaf


def _stand_ins(call: _PartCall) -> tuple:
    """Leaves sharing the memory of ``call``'s parameters, recorded in their
    place. A parameter's gradient accumulator runs on the stream it was made
    on, and it lives as long as any autograd graph through the parameter: a
    caller that keeps an eager step's loss keeps the accumulators of the
    default stream, which a capture cannot make wait ("operation would make
    the legacy stream depend on a capturing blocking stream", PyTorch 2.11;
    pytorch/pytorch#180090). Fresh leaves get accumulators of the capture's
    stream; optimizer steps in place still reach the graphs."""
    return tuple(
        p.detach().requires_grad_(p.requires_grad) for p in call.parameters())


class _Replay:
    """A part's recorded ``graphed(*inputs, *stand_ins)`` replayed with the
    parameters themselves (the same memory: nothing is copied), which get
    the gradients.

    Args:
        graphed (Callable): The part's graphed function.
        module (nn.Module): What was recorded (its parameters, in order,
            are what the stand-ins stood for).
    """

    def __init__(self, graphed: Callable, module: nn.Module):
        self.graphed = graphed
        self.parameters = tuple(module.parameters())
        # which gradients the graph computes
        self.trained = tuple(p.requires_grad for p in self.parameters)
        # where the module holds each parameter and buffer (its owner's
        # dict and name), and which tensor at which address it held: the
        # graph reads and writes that memory
        self.slots = [
            _slot(module, name, kind)
            for kind, named in (('_parameters', module.named_parameters),
                                ('_buffers', module.named_buffers))
            for name, _ in named()
        ]
        self.held = self._held()
        self._owned = [lambda: None] * len(self.parameters)  # weak refs

    def _held(self) -> list:
        held = []
        for tensors, name in self.slots:
            tensor = tensors.get(name)
            held.append(None if tensor is None else
                        (id(tensor), tensor.data_ptr()))
        return held

    def stale(self) -> bool:
        """Whether a parameter was frozen or unfrozen, or a parameter or
        buffer replaced or moved to other memory (``model.to()``, say),
        since the recording: the graph computes the gradients of the
        recording's parameters and reads and writes where they and the
        buffers were."""
        return any(p.requires_grad != trained for p, trained in zip(
            self.parameters, self.trained)) or self._held() != self.held

    def __call__(self, *tensors: Tensor):
        # the recorded backward returns its gradient buffers, and autograd
        # keeps such a buffer as a .grad that was None: the next replay
        # would write into gradients kept to accumulate
        # (pytorch/pytorch#181723); they get memory of their own, once (a
        # copy where gradients accumulate over steps, nothing otherwise)
        for i, p in enumerate(self.parameters):
            if p.grad is not None and p.grad is not self._owned[i]():
                p.grad = p.grad.clone()
                self._owned[i] = weakref.ref(p.grad)
        return self.graphed(*tensors, *self.parameters)


class _TrainingGraphGroup:
    """The graphed parts of one model: which of them a training step calls,
    in which order (seen in the first step, which runs eagerly), recorded
    together at the second, and the replay under way.

    Recorded together, the parts' graphs share one memory pool: a pool
    gives a freed block again only to a graph recorded after the one that
    freed it, and replays in the order of recording keep that safe, so the
    head's backward reuses the memory of its forward for the backbone's
    backward. Recorded one by one, each part's graphs kept their own peak.
    """

    def __init__(self):
        # (wrapper, signature, argument type, sample inputs) of each part
        # the observed step called, in order
        self.observed: list = []
        # (wrapper, signature) of the parts still to replay in this step
        self.replaying: list = []
        # whether a step's input size differed from the observed step's
        self.warned_size = False

    def __deepcopy__(self, memo: dict) -> '_TrainingGraphGroup':
        return type(self)()  # a copy of the model records its own graphs


class TrainingCUDAGraphs:
    """A model part's training forward and backward, each replayed as a CUDA
    graph (``torch.cuda.make_graphed_callables``).

    WaveMix's memory-efficient training step is thousands of kernels, many
    of them launched from Python autograd functions; where they are short
    (the coarse levels) the GPU waits for the host. A graph launches each
    pass at once. The parts of a model (:func:`training_cuda_graphs`) are
    recorded together, in one memory pool: the first training step runs
    eagerly and notes which parts it calls, in which order, and their
    inputs; the second, when the first of them is called again with the
    same input signature (shapes, strides, dtypes, autocast dtype; a step
    with another is observed instead, with a warning the first time), runs
    each part forward and backward twice on a side stream (cuDNN's
    algorithm search, Triton's compilation, the choice among kernels),
    records them all, and puts back the BatchNorm statistics those runs
    changed; it is logged (``logger='current'``) as it starts and ends.
    From then on each step copies the inputs into the recorded ones and
    replays, the parts in the recorded order. Parameters are read where
    they are, so optimizer steps (in place) reach the graphs, and gradients
    reach ``.grad`` as usual (the same values up to float rounding; also
    accumulated over steps). A parameter frozen or unfrozen after the
    recording, or a parameter or buffer replaced or moved to other memory,
    makes that step eager and the next record again.

    Calls in evaluation, without gradients, with CPU tensors or keyword
    arguments, under tracing or compilation, or of more signatures than
    ``max_graphs`` (each keeps its own activation memory: one is a
    training crop size) run ``fn`` itself; so do signatures whose recording
    failed, with a warning, and parts called out of the recorded order. The
    parts must compute the same kernels at every call (no data-dependent
    host work, no dropout of changing probability, BatchNorm with a fixed
    momentum), each part once a step, and each step's forward must be
    followed by its backward before the next forward (a recorded forward
    keeps its activations in the graphs' memory).

    Args:
        part (nn.Module): The part (its parameters get the gradients).
        fn (Callable): Its forward, of one tensor or one tuple/list of
            tensors, returning tensors.
        max_graphs (int): Signatures recorded at most. Default: 1.
        name (str): What ``part`` is, in the log. Default: ``'forward'``.
        group (_TrainingGraphGroup, optional): Shared by the parts recorded
            together. Default: None (a part of its own).
    """

    def __init__(self, part: nn.Module, fn: Callable, max_graphs: int = 1,
                 name: str = 'forward',
                 group: Optional[_TrainingGraphGroup] = None):
        self.part = part
        self.fn = fn
        self.max_graphs = max_graphs
        self.name = name
        self.group = _TrainingGraphGroup() if group is None else group
        # signature -> the replay, or None where recording failed
        self.graphs: Dict[tuple, Optional[_Replay]] = {}
        # signature -> the parts replayed after this one (it was the first)
        self.followers: Dict[tuple, list] = {}
        self._warned = False

    def __call__(self, *args, **kwargs):
        tensors = _replayable(args, kwargs)
        if not (tensors and self.part.training and torch.is_grad_enabled()):
            return self.fn(*args, **kwargs)
        key = _signature(tensors)
        group = self.group
        if group.replaying and group.replaying[0] == (self, key):
            group.replaying.pop(0)
            return self.graphs[key](*tensors)
        group.replaying = []  # a step begins, or one left the order
        if key not in self.graphs and group.observed and \
                group.observed[0][:2] == (self, key):
            _record_group(group.observed)  # the second step begins
            group.observed = []
        if key in self.graphs:
            graphed = self.graphs[key]
            if graphed is None or key not in self.followers:
                return self.fn(*args)  # failed, or not a step's first part
            parts = [(self, key), *self.followers[key]]
            if not any(wrapper.graphs[k].stale() for wrapper, k in parts):
                group.replaying = parts[1:]
                return graphed(*tensors)
            # dropped: this step is observed, the next records again
            print_log(
                'CUDA graphs: a parameter of the training '
                f'{" and ".join(w.name for w, _ in parts)} was frozen or '
                'unfrozen, or a parameter or buffer replaced or moved, since '
                'the recording: recording again at the next step',
                logger='current')
            for wrapper, k in parts:
                del wrapper.graphs[k]
                wrapper.followers.pop(k, None)
        if not _room_for(
                self, key, f'CUDA graphs of the {self.name} are recorded for '
                f'{self.max_graphs} training input size(s); others train '
                'without (use one crop size)'):
            return self.fn(*args)
        if group.observed and group.observed[0][0] is self:
            # a step begins with inputs of another size than the observed
            # step's: it is observed instead
            if not group.warned_size:
                group.warned_size = True
                warnings.warn(
                    'CUDA graphs: the training input size changed from one '
                    f'step to the next ({_sizes(group.observed[0][3])}, then '
                    f'{_sizes(tensors)}): the graphs are recorded at the '
                    'second of two steps of one size (use one crop size)')
            group.observed = []
        if any(wrapper is self for wrapper, *_ in group.observed):
            _give_up(group.observed, f'the {self.name} ran twice in a step')
            group.observed = []
            return self.fn(*args)
        # the first step: eager, its parts and their inputs noted
        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad)
                        for t in tensors)
        group.observed.append((self, key, type(args[0]), samples))
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> 'TrainingCUDAGraphs':
        # a copy of the model (an EMA model, say) records graphs of its own:
        # these read this one's tensors; its parts share one new group
        return type(self)(
            copy.deepcopy(self.part, memo), copy.deepcopy(self.fn, memo),
            self.max_graphs, self.name, copy.deepcopy(self.group, memo))


def _sizes(tensors) -> str:
    """``'1x3x64x64, 1x8'``: the tensors' shapes, for the log."""
    return ', '.join('x'.join(map(str, t.shape)) for t in tensors)


def _give_up(observed: list, reason: str) -> None:
    """The observed parts' signatures train without graphs, with a
    warning."""
    warnings.warn(f'CUDA graphs: the training step cannot be recorded '
                  f'({reason}); it trains without')
    for wrapper, key, *_ in observed:
        wrapper.graphs[key] = None


def _record_group(observed: list) -> None:
    """Record the training forward and backward of the parts the observed
    step called, in its order, in one memory pool; each part's graphed
    module goes to its wrapper's ``graphs`` (None where the recording
    failed, with a warning), the parts after the first to its
    ``followers``. The samples in ``observed`` are replaced by copies
    (:func:`_with_samples_copied_anew`)."""
    names = ' and '.join(wrapper.name for wrapper, *_ in observed)
    sizes = '; '.join(_sizes(samples) for *_, samples in observed)
    print_log(
        f'CUDA graphs: recording the training {names} for inputs {sizes} '
        '(two steps first; a first call of this size tunes the kernels: up '
        'to a minute)', logger='current')
    start = time.perf_counter()
    calls = tuple(
        _PartCall(wrapper.part, wrapper.fn, kind)
        for wrapper, _, kind, _ in observed)
    buffers = [[b.clone() for b in wrapper.part.buffers()]
               for wrapper, *_ in observed]
    device = observed[0][3][0].device
    pool, stream = torch.cuda.graph_pool_handle(), torch.cuda.current_stream(
        device)
    try:
        observed[:] = _with_samples_copied_anew(observed)
        # what the eager step left cached, and the samples' first copies:
        # the warm-up steps run on a stream of their own, which could not
        # reuse it (on an H200 the recording step reserved 17.9 GiB, the
        # steps after it 12.4)
        torch.cuda.empty_cache()
        arguments = tuple((*samples, *_stand_ins(call))
                          for call, (*_, samples) in zip(calls, observed))
        with _autocast_without_cache():
            for call, args in zip(calls, arguments):
                _warm_up(call.given, args)
            graphed = torch.cuda.make_graphed_callables(
                tuple(call.given for call in calls), arguments,
                num_warmup_iters=0, allow_unused_input=True, pool=pool)
    except Exception as error:  # noqa: BLE001
        _give_up(observed, f'recording the training {names} failed: '
                 f'{_failure(error)}{_end_failed_capture(stream, pool)}')
        return
    finally:
        # the warm-up steps updated the running statistics
        with torch.no_grad():
            for (wrapper, *_), saved in zip(observed, buffers):
                for buffer, value in zip(wrapper.part.buffers(), saved):
                    buffer.copy_(value)
    for (wrapper, key, *_), call, fn in zip(observed, calls, graphed):
        wrapper.graphs[key] = _Replay(fn, call)
    first, key = observed[0][:2]
    first.followers[key] = [(wrapper, k) for wrapper, k, *_ in observed[1:]]
    hint = '' if _expandable_segments() else (
        '; their memory pools would hold less with PyTorch\'s expandable '
        'segments, set before the run: '
        'PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True')
    # the memory to watch from here: the log's "memory" (mmengine's largest
    # allocation) misses what the replays use, which they do not allocate
    reserved = '' if device.type != 'cuda' else (
        f'; {torch.cuda.memory_reserved(device) / 2**30:.1f} GiB reserved '
        "now (the log's memory counts allocations, which replays do not "
        'make)')
    print_log(
        f'CUDA graphs: recorded the training {names} in '
        f'{time.perf_counter() - start:.1f} s{reserved}{hint}',
        logger='current')


def _expandable_segments() -> bool:
    """Whether the environment sets PyTorch's CUDA allocator to expandable
    segments (each memory pool one range of addresses mapped as it grows:
    on an H200 the recipe's graphed step at batch 5 reserved 11.0 GiB with
    them, 12.3 GiB without, the rest blocks of sizes it could not use)."""
    settings = (os.environ.get(name, '') for name in ALLOCATOR_VARIABLES)
    return any('expandable_segments:true' in s.replace(' ', '').lower()
               for s in settings)


def _with_samples_copied_anew(observed: list) -> list:
    """``observed`` with its samples (the graphs' static inputs, kept for
    good) copied into memory of their own. They were copied during the
    eager step, into free blocks of the cache, which may be parts of larger
    blocks the step's activations had freed: a kept tensor keeps all of its
    block reserved, and the recorded steps' activations, in the graphs'
    pool, could not use the rest."""
    torch.cuda.synchronize(observed[0][3][0].device)
    torch.cuda.empty_cache()
    with torch.no_grad():  # leaves, as the samples are
        return [(wrapper, key, kind,
                 tuple(
                     torch.empty_strided(
                         t.shape, t.stride(), dtype=t.dtype,
                         device=t.device).copy_(t).requires_grad_(
                             t.requires_grad) for t in samples))
                for wrapper, key, kind, samples in observed]


def _failure(error: BaseException) -> str:
    """The error a recording raised, named by the first one of its chain (a
    call a capture cannot hold raises; the capture's end then raises
    another) and the last line of this package it passed."""
    chain = [error]
    while chain[-1].__context__ is not None and len(chain) < 8:
        chain.append(chain[-1].__context__)
    first = chain[-1]
    here = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    lines = [
        f'{osp.relpath(frame.filename, osp.dirname(here))}:{frame.lineno}'
        for frame in traceback.extract_tb(first.__traceback__)
        if osp.abspath(frame.filename).startswith(here + osp.sep)
        and osp.abspath(frame.filename) != osp.abspath(__file__)
    ]
    return f'{type(first).__name__}: {first}' + (
        f' (at {lines[-1]})' if lines else '') + (
            '' if first is error else
            f'; then {type(error).__name__}: {error}')


def _end_failed_capture(stream: torch.cuda.Stream, pool: tuple) -> str:
    """Undo what a capture that CUDA ended in error leaves behind (PyTorch
    undoes it only after a capture that ends well): the capture's stream as
    the current one (``stream`` was), the allocator giving that stream's
    memory to the graphs' ``pool``, and the device's random generator
    marked as in a capture, so that every random number drawn on the device
    later raises ("Offset increment outside graph capture"); the generator
    gets a fresh state of the same seed and offset. What the failed capture
    allocated stays in its pool (PyTorch frees a pool with the last graph
    that ended its capture well). Returns what could not be undone, for the
    warning."""
    torch.cuda.set_stream(stream)
    try:
        torch._C._cuda_endAllocateToPool(stream.device.index, pool)
    except Exception:  # noqa: BLE001 (the capture ended well: nothing to do)
        pass
    try:
        generator = torch.cuda.default_generators[stream.device.index]
        fresh = torch.Generator(stream.device)
        fresh.set_state(generator.get_state())
        generator.graphsafe_set_state(fresh)
    except Exception as error:  # noqa: BLE001
        return ('; random numbers on the device may fail: '
                f'{type(error).__name__}: {error}')
    return ''


def _warm_up(fn: Callable, args: tuple, steps: int = 2) -> None:
    """``steps`` forward and backward passes of ``fn(*args)`` on a side
    stream (cuDNN's algorithm search, Triton's compilation, the choice among
    kernels), then the memory they left cached is freed: the recording
    allocates in a pool of its own, which could not reuse it."""
    inputs = [t for t in args if t.requires_grad]
    device = args[0].device
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(steps):
            outputs = [o for o in tree_leaves(fn(*args)) if o.requires_grad]
            torch.autograd.grad(
                outputs, inputs, [torch.zeros_like(o) for o in outputs],
                allow_unused=True)
            del outputs
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()


def training_cuda_graphs(model: nn.Module, max_graphs: int = 1) -> nn.Module:
    """Replay the training forward and backward of each part of ``model``
    (``backbone``, ``neck``, ``decode_head``, ``head``, ``auxiliary_head``;
    or of ``model`` itself without them) as CUDA graphs, in place
    (:class:`TrainingCUDAGraphs`), all parts recorded together at the
    second training step, in one memory pool. Parameters and state dict are
    unchanged; a part already graphed is left as it is.

    Args:
        model (nn.Module): A model on CUDA, in one process.
        max_graphs (int): Input signatures recorded per part. Default: 1.

    Returns:
        nn.Module: ``model``.

    Raises:
        ValueError: Where a BatchNorm averages its running statistics
            cumulatively (``momentum=None``): its momentum changes each step,
            a graph would keep the first.
    """
    for name, norm in model.named_modules():
        if isinstance(norm, _BatchNorm) and norm.momentum is None and \
                norm.track_running_stats:
            raise ValueError(
                f'CUDA graphs for training need BatchNorm with a fixed '
                f'momentum; {name} has momentum=None (a cumulative average, '
                'whose weight changes each step): set a momentum or train '
                'without cuda_graphs')
    parts = [(name, getattr(model, name)) for name in TRAINED_PARTS
             if isinstance(getattr(model, name, None), nn.Module)
             ] or [('model', model)]
    graphed = [p.forward for _, p in parts
               if isinstance(p.forward, TrainingCUDAGraphs)]
    group = graphed[0].group if graphed else _TrainingGraphGroup()
    for name, part in parts:
        if not isinstance(part.forward, TrainingCUDAGraphs):
            # an instance attribute, as in cuda_graph_forwards
            part.forward = TrainingCUDAGraphs(part, part.forward, max_graphs,
                                              name, group)
    return model


def _room_for(graphs, key: tuple, warning: str) -> bool:
    """Whether ``graphs`` (:class:`CUDAGraphs`, :class:`TrainingCUDAGraphs`)
    has a graph for ``key`` or may record one; past its ``max_graphs`` it
    warns the first time."""
    if key in graphs.graphs or len(graphs.graphs) < graphs.max_graphs:
        return True
    if not graphs._warned:
        graphs._warned = True
        warnings.warn(warning)
    return False


def _tensors(args: tuple) -> list:
    """The tensors of a part's one argument (a tensor, or a tuple or list of
    them); [] for other calls."""
    inputs = args[0] if len(args) == 1 else None
    return [inputs] if isinstance(inputs, Tensor) else \
        list(inputs) if isinstance(inputs, (tuple, list)) else []


def _replayable(args: tuple, kwargs: dict) -> list:
    """The tensors of a call a graph can replay: one argument of CUDA
    tensors, no keyword arguments, not traced or compiled; else []."""
    tensors = _tensors(args)
    if kwargs or torch.jit.is_tracing() or torch.compiler.is_compiling() or \
            not all(isinstance(t, Tensor) and t.is_cuda for t in tensors):
        return []
    return tensors


def _signature(tensors):
    autocast = torch.is_autocast_enabled('cuda')
    return (autocast and torch.get_autocast_dtype('cuda'),
            *((t.shape, t.stride(), t.dtype, t.device, t.requires_grad)
              for t in tensors))


def _autocast_without_cache():
    """Autocast as it is now, without its weight-cast cache: casts cached
    before a recording would be read by the graph after autocast frees
    them."""
    return torch.autocast(
        'cuda', dtype=torch.get_autocast_dtype('cuda'),
        enabled=torch.is_autocast_enabled('cuda'), cache_enabled=False)


def _clone(output):
    if isinstance(output, Tensor):
        return output.clone()
    if isinstance(output, (tuple, list)):
        return type(output)(_clone(o) for o in output)
    raise TypeError('CUDAGraphs needs a function that returns tensors, got '
                    f'{type(output).__name__}')


def cuda_graph_forwards(model: nn.Module,
                        compile: bool = False,
                        max_graphs: int = 4) -> nn.Module:
    """Replay the forward of each part of ``model`` (``backbone``, ``neck``,
    ``decode_head``, ``head``, also inside a test-time-augmentation wrapper's
    ``module``; or of ``model`` itself without them) as CUDA graphs in
    inference, in place (:class:`CUDAGraphs`). Parameters and state dict are
    unchanged; a part already graphed is left as it is.

    Args:
        model (nn.Module): A model on CUDA, for inference.
        compile (bool): Record the parts compiled by ``torch.compile``
            (Inductor fuses their elementwise work into the GEMMs and
            convolutions around it), which takes about a minute at the first
            call of each input size. Default: False.
        max_graphs (int): Input signatures recorded per part. Default: 4.

    Returns:
        nn.Module: ``model``.
    """
    inner = getattr(model, 'module', None)
    inner = inner if isinstance(inner, nn.Module) else model
    parts = [(name, getattr(inner, name)) for name in GRAPHED_PARTS
             if isinstance(getattr(inner, name, None), nn.Module)
             ] or [('model', inner)]
    for name, part in parts:
        if not isinstance(part.forward, CUDAGraphs):
            # an instance attribute: nn.Module.__call__ and code that calls
            # part.forward() directly (mmseg's decode heads) both use it
            part.forward = CUDAGraphs(part.forward, compile, max_graphs,
                                      name)
    return model
