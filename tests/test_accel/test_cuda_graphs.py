# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""CUDA graphs of prepare_for_inference: what a CPU can check (where they are
put, that other calls run the function itself). Replays are checked in
tests/test_cuda.py."""
import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel import (CUDAGraphs, cuda_graph_forwards,
                                        prepare_for_inference)
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..conftest import REPO_ROOT


class Counting:

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return [t * 2 for t in x] if isinstance(x, list) else x * 2


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
