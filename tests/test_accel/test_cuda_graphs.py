# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""CUDA graphs of prepare_for_inference and of training
(training_cuda_graphs): what a CPU can check (where they are put, that other
calls run the function itself, what they refuse). Replays are checked in
tests/test_cuda.py."""
import contextlib
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_wavemix.models.accel import (CUDAGraphs, TrainingCUDAGraphs,
                                        cuda_graph_forwards,
                                        prepare_for_inference,
                                        training_cuda_graphs)
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..conftest import REPO_ROOT, logged_messages


class Counting:

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return [t * 2 for t in x] if isinstance(x, list) else x * 2


class Uncopyable:
    """Stands for a recorded graph, which cannot be copied."""

    def __deepcopy__(self, memo):
        raise TypeError('a recorded graph cannot be copied')


def demo_model():
    _, model = build_model_from_config(
        f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py')
    return model.eval()


def test_graphs_wrap_the_backbone_and_head_and_keep_the_state_dict():
    model = demo_model()
    keys = list(model.state_dict())
    cuda_graph_forwards(model)
    assert isinstance(model.backbone.forward, CUDAGraphs)
    assert isinstance(model.decode_head.forward, CUDAGraphs)
    # the names its log gives each recording
    assert model.backbone.forward.name == 'backbone'
    assert model.decode_head.forward.name == 'decode_head'
    assert list(model.state_dict()) == keys
    plain = cuda_graph_forwards(nn.Conv2d(3, 4, 1))  # no parts: the model
    assert plain.forward.name == 'model'
    graphs = model.backbone.forward
    cuda_graph_forwards(model)  # a second preparation wraps nothing again
    assert model.backbone.forward is graphs


def test_graphs_reach_the_model_inside_a_tta_wrapper():
    wrapper = nn.Module()
    wrapper.module = demo_model()
    cuda_graph_forwards(wrapper)
    assert isinstance(wrapper.module.backbone.forward, CUDAGraphs)


def test_cpu_inputs_and_gradients_run_the_function_itself():
    fn = Counting()
    graphs = CUDAGraphs(fn)
    x = torch.ones(2)
    with torch.no_grad():
        torch.testing.assert_close(graphs(x), x * 2)
        torch.testing.assert_close(graphs([x])[0], x * 2)
    torch.testing.assert_close(graphs(x), x * 2)  # gradients enabled
    assert fn.calls == 3 and not graphs.graphs


@pytest.mark.parametrize('cuda_graphs', [True, False])
def test_prepare_for_inference_on_cpu_records_no_graphs(cuda_graphs):
    model = prepare_for_inference(demo_model(), cuda_graphs=cuda_graphs)
    assert 'forward' not in vars(model.backbone)
    assert 'forward' not in vars(model.decode_head)


def test_training_graphs_wrap_the_parts_and_cpu_training_runs_eagerly():
    """On CPU (and in evaluation, without gradients) the wrapped parts run
    their forward: the same loss and gradients as the unwrapped model,
    nothing recorded."""
    torch.manual_seed(0)
    model = demo_model().train()
    wrapped = training_cuda_graphs(copy.deepcopy(model))
    for name in ('backbone', 'decode_head'):
        graphs = getattr(wrapped, name).forward
        assert isinstance(graphs, TrainingCUDAGraphs) and graphs.name == name
    assert list(wrapped.state_dict()) == list(model.state_dict())
    x = torch.randn(1, 3, 64, 128)
    grads = []
    for m in (model, wrapped):
        m(x, mode='tensor').square().mean().backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a)
    with torch.no_grad():
        wrapped(x, mode='tensor')
    assert not wrapped.backbone.forward.graphs
    assert not wrapped.decode_head.forward.graphs
    graphs = wrapped.backbone.forward
    training_cuda_graphs(wrapped)  # a second preparation wraps nothing again
    assert wrapped.backbone.forward is graphs


@pytest.mark.parametrize('prepare,wrapper', [
    (training_cuda_graphs, TrainingCUDAGraphs),
    (cuda_graph_forwards, CUDAGraphs),
])
def test_a_copy_of_a_graphed_model_records_its_own(prepare, wrapper):
    """copy.deepcopy (an EMA model, say) copies no recorded graph: the
    copy's wrappers serve the copy's parts."""
    model = prepare(demo_model().train())
    model.backbone.forward.graphs[('a signature', )] = Uncopyable()
    copied = copy.deepcopy(model)
    graphs = copied.backbone.forward
    assert isinstance(graphs, wrapper) and not graphs.graphs
    assert graphs.fn.__self__ is copied.backbone
    assert graphs.name == 'backbone'
    assert getattr(graphs, 'part', copied.backbone) is copied.backbone
    assert model.backbone.forward.graphs
    if wrapper is TrainingCUDAGraphs:  # the copy's parts record together
        assert copied.decode_head.forward.group is graphs.group
        assert graphs.group is not model.backbone.forward.group


def test_training_graphs_refuse_a_cumulative_batch_norm():
    model = demo_model().train()
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    norm.momentum = None
    with pytest.raises(ValueError, match='momentum=None .*set a momentum'):
        training_cuda_graphs(model)


def test_a_failed_training_recording_warns_and_trains_eagerly(monkeypatch):
    """The recording's steps leave no trace in the BatchNorm statistics, a
    recording that fails is said and its signature trains without graphs,
    and signatures beyond max_graphs train without, with a warning (the
    recording itself needs CUDA: here its first two steps run on CPU and
    make_graphed_callables fails)."""
    from mmseg_wavemix.models.accel import cuda_graphs

    def warm_up(fn, args):
        for _ in range(2):
            fn(*args).sum().backward()

    def fail(*args, **kwargs):
        raise RuntimeError('operation not permitted when stream is capturing')

    monkeypatch.setattr(cuda_graphs, '_replayable',
                        lambda args, kwargs: cuda_graphs._tensors(args))
    monkeypatch.setattr(cuda_graphs, '_warm_up', warm_up)
    monkeypatch.setattr(torch.cuda, 'make_graphed_callables', fail)
    stream, ended = _Stream(), []
    monkeypatch.setattr(torch.cuda, 'graph_pool_handle', lambda: (0, 7))
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device: None)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    monkeypatch.setattr(torch.cuda, 'current_stream', lambda device: stream)
    monkeypatch.setattr(cuda_graphs, '_end_failed_capture',
                        lambda *args: ended.append(args) or '')
    part = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    graphs = TrainingCUDAGraphs(part, part.forward, name='backbone')
    part.forward = graphs
    expected = copy.deepcopy(part[1])
    x = torch.randn(2, 3, 4, 4)
    part(x)  # the first step runs eagerly, the second records
    assert not graphs.graphs
    with pytest.warns(UserWarning, match=r'cannot be recorded \(recording '
                      'the training backbone failed: RuntimeError: operation '
                      r'.*\); it trains without'):
        part(x)
    assert list(graphs.graphs.values()) == [None]
    # what the capture left is undone: its stream, its pool
    assert ended == [(stream, (0, 7))]
    for _ in range(2):  # two steps' statistics: the eager calls'
        expected(part[0](x))
    for name, buffer in expected.named_buffers():
        torch.testing.assert_close(getattr(part[1], name), buffer)
    with pytest.warns(UserWarning, match='recorded for 1 training input'):
        part(torch.randn(1, 3, 4, 4))
    assert len(graphs.graphs) == 1


class _Stream:

    def wait_stream(self, stream):
        pass


def _cuda_stood_in(monkeypatch):
    """CUDA's streams stood in, and make_graphed_callables returning the
    functions it gets, after checking that they are recorded with stand-ins
    for the parameters. Returns the lists of each recording's input shapes
    and of the parts replayed."""
    from mmseg_wavemix.models.accel import cuda_graphs
    made, replays = [], []

    def make_graphed_callables(calls, samples, num_warmup_iters,
                               allow_unused_input, pool):
        inputs = [len(s) - len(call.__self__.names)
                  for call, s in zip(calls, samples)]
        made.append([[tuple(t.shape) for t in s[:n]]
                     for s, n in zip(samples, inputs)])
        for call, s, n in zip(calls, samples, inputs):
            # recorded with stand-ins for the parameters: leaves of their
            # memory (the parameters' own gradient accumulators may be of
            # another stream)
            parameters = list(call.__self__.parameters())
            assert len(s) - n == len(parameters) > 0
            for stand_in, p in zip(s[n:], parameters):
                assert stand_in is not p and stand_in.is_leaf
                assert stand_in.data_ptr() == p.data_ptr()
                assert stand_in.requires_grad == p.requires_grad

        def replayed(call, n, trained):
            """Stands for a graphed part: the call, counted, with the
            gradients of the parameters that required them when recorded."""

            def replay(*tensors):
                replays.append(call.__self__.part)
                return call(*tensors[:n], *(
                    p if t else p.detach()
                    for p, t in zip(tensors[n:], trained)))

            return replay

        return tuple(
            replayed(call, n, [t.requires_grad for t in s[n:]])
            for call, s, n in zip(calls, samples, inputs))

    monkeypatch.setattr(cuda_graphs, '_replayable',
                        lambda args, kwargs: cuda_graphs._tensors(args))
    for name, value in dict(
            Stream=lambda device: _Stream(),
            current_stream=lambda device=None: _Stream(),
            stream=lambda stream: contextlib.nullcontext(),
            synchronize=lambda device=None: None,
            empty_cache=lambda: None,
            graph_pool_handle=lambda: (0, 1),
            make_graphed_callables=make_graphed_callables).items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.delenv('PYTORCH_CUDA_ALLOC_CONF', raising=False)
    monkeypatch.delenv('PYTORCH_ALLOC_CONF', raising=False)
    return made, replays


@pytest.mark.parametrize('mode', ['tensor', 'loss'])
def test_training_recording_path_with_cuda_stood_in(monkeypatch, mode):
    """The recording path of the demo model's backbone (a tensor) and head
    (a tuple of features) with CUDA's streams stood in and
    make_graphed_callables returning the functions it gets: the warm-up's
    forward and backward run, their BatchNorm statistics are put back, the
    parts are recorded with stand-ins for their parameters, and training
    (the replays given the parameters) gives the eager model's losses,
    gradients and statistics; as the model's logits, and through mmseg's
    loss (``mode='loss'``: the head called from its ``loss``)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    made, replays = _cuda_stood_in(monkeypatch)
    torch.manual_seed(0)
    eager = demo_model().train()
    wrapped = training_cuda_graphs(copy.deepcopy(eager))
    x = torch.randn(1, 3, 64, 64)
    sample = SegDataSample(gt_sem_seg=PixelData(
        data=torch.randint(0, 19, (1, 64, 64))))
    sample.set_metainfo(dict(img_shape=(64, 64), pad_shape=(64, 64)))
    results = []
    with logged_messages() as logged:
        for model in (eager, wrapped):
            grads = []
            for _ in range(3):
                if mode == 'tensor':
                    loss = model(x, mode='tensor').square().mean()
                else:
                    losses = model(x, [sample], mode='loss')
                    loss = sum(v for k, v in losses.items() if 'loss' in k)
                loss.backward()
                grads.append([p.grad.clone() for p in model.parameters()])
                model.zero_grad()
            results.append((grads, dict(model.named_buffers())))
    # the recording says how its pools would hold less
    assert [m.split(' in ')[0] for m in logged if 'recorded' in m] == [
        'CUDA graphs: recorded the training backbone and decode_head']
    assert any(m.endswith('; their memory pools would hold less with '
                          "PyTorch's expandable segments, set before the "
                          'run: PYTORCH_CUDA_ALLOC_CONF='
                          'expandable_segments:True') for m in logged)
    # the first step ran eagerly, the second recorded both parts together
    assert made == [[[(1, 3, 64, 64)], [(1, 16, 16, 16)]]]
    # then both parts replayed, in order, in the second and third steps
    assert replays == [wrapped.backbone, wrapped.decode_head] * 2
    backbone, head = wrapped.backbone.forward, wrapped.decode_head.forward
    assert backbone.group is head.group
    key = next(iter(backbone.graphs))
    assert backbone.followers == {key: [(head, next(iter(head.graphs)))]}
    assert head.followers == {}
    for a, b in zip(results[0][0], results[1][0]):
        for ga, gb in zip(a, b):
            torch.testing.assert_close(gb, ga)
    for name, buffer in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], buffer, msg=name)


def test_training_graphs_replay_the_recorded_order_only(monkeypatch):
    """A part called out of the recorded order (a step that does not begin
    with the first part) runs eagerly; a part called twice in the observed
    step cannot be replayed in order: that step's parts train without
    graphs, with a warning."""
    from mmseg_wavemix.models.accel import cuda_graphs
    monkeypatch.setattr(cuda_graphs, '_replayable',
                        lambda args, kwargs: cuda_graphs._tensors(args))

    def record_group(observed):  # each "graph" says what it replays
        for wrapper, key, *_ in observed:
            wrapper.graphs[key] = cuda_graphs._Replay(
                lambda t, name=wrapper.name: ('replayed', name), nn.Module())
        first, key = observed[0][:2]
        first.followers[key] = [(w, k) for w, k, *_ in observed[1:]]

    monkeypatch.setattr(cuda_graphs, '_record_group', record_group)
    x = torch.randn(2, 3)
    for names in ('ab', 'cd'):
        group = cuda_graphs._TrainingGraphGroup()
        first, second = (TrainingCUDAGraphs(
            nn.Identity().train(), nn.Identity(), name=name, group=group)
                         for name in names)
        assert first(x) is x and second(x) is x  # observed, eager
        if names == 'ab':
            assert first(x) == ('replayed', 'a')  # recorded, replayed
            assert second(x) == ('replayed', 'b')
            assert second(x) is x  # out of order: eager
            assert first(x) == ('replayed', 'a')
            assert second(x) == ('replayed', 'b')
    with pytest.warns(UserWarning, match='the d ran twice in a step'):
        assert second(x) is x
    key = cuda_graphs._signature([x])
    assert first.graphs == second.graphs == {key: None}
    assert first(x) is x and second(x) is x


def test_training_graphs_wait_for_two_steps_of_one_size(monkeypatch):
    """Where the input size changes from one step to the next before the
    recording, the later step is observed instead (with one warning naming
    the sizes, not a part "run twice in a step"), and the graphs are
    recorded at the second of two steps of one size; training gives eager
    training's gradients throughout."""
    made, replays = _cuda_stood_in(monkeypatch)
    torch.manual_seed(0)
    eager = demo_model().train()
    wrapped = training_cuda_graphs(copy.deepcopy(eager))
    with pytest.warns(UserWarning) as warned:
        for size in (64, 96, 64, 96, 64, 64, 64):
            step_both(eager, wrapped, torch.randn(1, 3, size, size))
    assert [str(w.message) for w in warned
            if 'CUDA graphs' in str(w.message)] == [
                'CUDA graphs: the training input size changed from one step '
                'to the next (1x3x64x64, then 1x3x96x96): the graphs are '
                'recorded at the second of two steps of one size (use one '
                'crop size)'
            ]
    assert made == [[[(1, 3, 64, 64)], [(1, 16, 16, 16)]]]
    assert replays == [wrapped.backbone, wrapped.decode_head] * 2


def test_a_failed_recording_is_named_by_its_first_error_and_its_line():
    """The warning of a failed recording names the error that made the
    capture fail (not only the capture's end, which raises after it) and
    the line of this package it passed."""
    from mmseg_wavemix.models.accel.cuda_graphs import _failure
    from mmseg_wavemix.ops import level_mlp_triton
    with pytest.raises(RuntimeError) as raised:
        try:
            level_mlp_triton.pack_conv_transpose_weight(torch.zeros(2, 2))
        except ValueError:
            raise RuntimeError('capture invalidated')
    message = _failure(raised.value)
    assert message.startswith('ValueError: expected a (C, CO, 4, 4) ')
    line = message.split('(at ')[1].split(')')[0]
    path, number = line.split(':')
    assert path == osp.join('mmseg_wavemix', 'ops', 'level_mlp_triton.py')
    assert 'raise ValueError' in open(osp.join(REPO_ROOT, path)).readlines()[
        int(number) - 1]
    assert message.endswith('; then RuntimeError: capture invalidated')
    assert _failure(ValueError('alone')) == 'ValueError: alone'


def test_recorded_samples_are_copied_anew(monkeypatch):
    """The graphs' static inputs are copied after the cache is freed (memory
    of their own, not parts of blocks the eager step freed): same values,
    strides and requires_grad, other storage."""
    from mmseg_wavemix.models.accel import cuda_graphs
    freed = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device: None)
    monkeypatch.setattr(torch.cuda, 'empty_cache',
                        lambda: freed.append(True))
    image = torch.randn(2, 3, 8, 8)
    features = torch.randn(2, 4, 4, 4).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    observed = [('backbone', 'a', torch.Tensor, (image, )),
                ('head', 'b', tuple, (features, ))]
    copied = cuda_graphs._with_samples_copied_anew(observed)
    assert freed and [entry[:3] for entry in copied] == [
        entry[:3] for entry in observed]
    for (*_, (old, )), (*_, (new, )) in zip(observed, copied):
        assert new.untyped_storage().data_ptr() != \
            old.untyped_storage().data_ptr()
        assert new.stride() == old.stride()
        assert new.requires_grad == old.requires_grad and new.is_leaf
        torch.testing.assert_close(new, old)


def step_both(eager, wrapped, x):
    """A training step of both models on ``x``: the same gradients (None
    for the same parameters)."""
    grads = []
    for model in (eager, wrapped):
        model.zero_grad()
        model(x, mode='tensor').square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a)


def _unfreeze(model):
    model.backbone.stem[0].requires_grad_(True)


def _move(model):
    weight = model.backbone.stem[0].weight
    weight.data = weight.data.clone()  # what Module.to() does


def _replace(model):
    conv = model.backbone.stem[0]
    conv.weight = nn.Parameter(conv.weight.detach().clone())


def _replace_a_buffer(model):
    norm = next(m for m in model.backbone.modules()
                if isinstance(m, _BatchNorm))
    norm.running_var = norm.running_var.clone()


@pytest.mark.parametrize('change',
                         [_unfreeze, _move, _replace, _replace_a_buffer])
def test_a_parameter_changed_after_the_recording_records_again(
        monkeypatch, change):
    """A graph computes the gradients of the parameters that required them
    when it was recorded, and reads and writes the memory the parameters
    and buffers had: where one is unfrozen (or frozen), moved to other
    memory or replaced later, the next step runs eagerly and the one after
    records again, with the gradients and statistics of eager training
    throughout."""
    made, replays = _cuda_stood_in(monkeypatch)
    torch.manual_seed(0)
    eager = demo_model().train()
    eager.backbone.stem[0].requires_grad_(False)
    wrapped = training_cuda_graphs(copy.deepcopy(eager))
    x = torch.randn(1, 3, 64, 64)
    with logged_messages() as logged:
        for step in range(6):
            if step == 3:  # after a replay
                for model in (eager, wrapped):
                    change(model)
            step_both(eager, wrapped, x)
    # recorded at the second step and again at the fifth, replayed from
    # each (the fourth eager)
    assert len(made) == 2
    assert replays == [wrapped.backbone, wrapped.decode_head] * 4
    assert [m.split(':')[1] for m in logged if 'frozen' in m] == [
        ' a parameter of the training backbone and decode_head was frozen or '
        'unfrozen, or a parameter or buffer replaced or moved, since the '
        'recording']
    for name, buffer in eager.named_buffers():
        torch.testing.assert_close(wrapped.get_buffer(name), buffer)


class _RecordedLinear(torch.autograd.Function):
    """Stands for a recorded part (a linear layer) as
    make_graphed_callables replays it: its backward writes the gradients
    into the same buffers at every call and returns them."""

    @staticmethod
    def forward(ctx, static, x, weight, bias):
        ctx.static, ctx.x = static, x
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        ctx.static[0].copy_(grad.t() @ ctx.x)
        ctx.static[1].copy_(grad.sum(0))
        return None, None, ctx.static[0].detach(), ctx.static[1].detach()


@pytest.mark.parametrize('set_to_none', [True, False])
def test_replayed_gradients_accumulate_over_steps(set_to_none):
    """Autograd keeps a replay's gradient buffer itself as a parameter's
    ``.grad`` where that was None, and the next replay writes into it:
    gradients accumulated over steps (mmengine's ``accumulative_counts``) or
    into zeroed ones (``zero_grad(set_to_none=False)``) are still the sum
    of the steps' (pytorch/pytorch#181723), not the last one's twice."""
    from mmseg_wavemix.models.accel.cuda_graphs import _Replay
    layer = nn.Linear(3, 2)
    eager = copy.deepcopy(layer)
    static = [torch.zeros_like(p) for p in layer.parameters()]
    replay = _Replay(
        lambda x, *params: _RecordedLinear.apply(static, x, *params), layer)
    for step in range(2):
        for model in (layer, eager):
            model.zero_grad(set_to_none=set_to_none)
        for i, x in enumerate(torch.randn(3, 4, 3)):  # three accumulated
            replay(x).square().sum().backward()
            eager(x).square().sum().backward()
            if i == 1:
                owned = [p.grad for p in layer.parameters()]
        # copied once: later steps accumulate in place
        assert all(p.grad is g for p, g in zip(layer.parameters(), owned))
        for a, b in zip(eager.parameters(), layer.parameters()):
            torch.testing.assert_close(b.grad, a.grad)


@pytest.mark.parametrize('name', ['PYTORCH_CUDA_ALLOC_CONF',
                                  'PYTORCH_ALLOC_CONF'])
def test_expandable_segments_are_read_from_the_environment(
        monkeypatch, name):
    """Expandable segments are on where either of PyTorch's variables sets
    them true, among other settings."""
    from mmseg_wavemix.models.accel.cuda_graphs import _expandable_segments
    for variable in ('PYTORCH_CUDA_ALLOC_CONF', 'PYTORCH_ALLOC_CONF'):
        monkeypatch.delenv(variable, raising=False)
    assert not _expandable_segments()
    monkeypatch.setenv(name, 'max_split_size_mb:128,expandable_segments:False')
    assert not _expandable_segments()
    monkeypatch.setenv(name, 'max_split_size_mb:128, expandable_segments:True')
    assert _expandable_segments()
