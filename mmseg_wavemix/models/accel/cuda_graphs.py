# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Inference replayed as CUDA graphs: one launch instead of hundreds."""
import time
import warnings
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

# Parts of OpenMMLab models whose forward is a tensor function; each becomes
# one graph (a model without them is graphed as a whole).
GRAPHED_PARTS = ('backbone', 'neck', 'decode_head', 'head')


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
        # what is recorded; calls that are not replayed run `fn` itself
        self.recorded_fn = torch.compile(fn, dynamic=False) if compile \
            else fn
        self.max_graphs = max_graphs
        self.graphs: Dict[tuple, Tuple[torch.cuda.CUDAGraph, list,
                                       object]] = {}
        self._warned = False

    def __call__(self, *args, **kwargs):
        inputs = args[0] if len(args) == 1 else None
        tensors = [inputs] if isinstance(inputs, Tensor) else \
            list(inputs) if isinstance(inputs, (tuple, list)) else []
        if kwargs or torch.is_grad_enabled() or torch.jit.is_tracing() or \
                torch.compiler.is_compiling() or not tensors or not all(
                    isinstance(t, Tensor) and t.is_cuda for t in tensors):
            return self.fn(*args, **kwargs)
        key = self._signature(tensors)
        if key not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f'CUDA graphs are recorded for {self.max_graphs} '
                        'input sizes; others run without (pad or resize '
                        'test images to a few sizes to get them)')
                return self.fn(*args)
            sizes = ', '.join('x'.join(map(str, t.shape)) for t in tensors)
            print_log(
                f'CUDA graphs: recording the {self.name} for inputs {sizes} '
                '(a first call of this size tunes the kernels: up to a '
                'minute)', logger='current')
            start = time.perf_counter()
            self.graphs[key] = self._record(inputs, tensors)
            print_log(
                f'CUDA graphs: recorded the {self.name} in '
                f'{time.perf_counter() - start:.1f} s', logger='current')
        graph, static_inputs, static_output = self.graphs[key]
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor)
        graph.replay()
        return _clone(static_output)

    @staticmethod
    def _signature(tensors):
        autocast = torch.is_autocast_enabled('cuda')
        return (autocast and torch.get_autocast_dtype('cuda'),
                *((t.shape, t.stride(), t.dtype, t.device) for t in tensors))

    def _record(self, inputs, tensors):
        static_inputs = [
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                device=t.device).copy_(t) for t in tensors
        ]
        static_args = static_inputs[0] if isinstance(inputs, Tensor) else \
            type(inputs)(static_inputs) if isinstance(inputs, tuple) else \
            static_inputs
        # Without autocast's weight-cast cache: casts cached before the
        # recording would be read by the graph after autocast frees them.
        autocast = torch.is_autocast_enabled('cuda')
        no_cache = torch.autocast(
            'cuda', dtype=torch.get_autocast_dtype('cuda'), enabled=autocast,
            cache_enabled=False)
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
