# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The GPU kernels need Triton 3: with the Triton 2.x of PyTorch 2.0-2.3
none of them serves (they would fail to compile at their first call), the
plain PyTorch ways do, and the first CUDA tensor says so once."""
import importlib
import sys
import types
import warnings

import pytest
import torch

from mmseg_wavemix.ops import (accuracy, gelu_triton, haar_triton,
                               level_mlp_triton, log_softmax_gather,
                               triton_support)

KERNEL_MODULES = (haar_triton, accuracy, log_softmax_gather, gelu_triton,
                  level_mlp_triton)


@pytest.mark.parametrize('version,supported', [('2.1.0', False),
                                               ('2.3.1', False),
                                               ('3.0.0', True),
                                               ('3.6.0+git1a2b3c4', True),
                                               ('10.0', True)])
def test_supported_versions(version, supported):
    assert triton_support.supports(version) == supported


class FakeCUDATensor:
    """What the kernels' checks read of a 4D float16 CUDA tensor (there is
    no GPU here)."""
    is_cuda = True
    dtype = torch.float16
    shape = (1, 8, 4, 4)
    device = 'cuda:0'

    def dim(self):
        return 4


@pytest.fixture
def triton_2_1(monkeypatch):
    """The kernel modules loaded as with PyTorch 2.1's Triton 2.1, and
    loaded again as they were afterwards."""
    old = types.ModuleType('triton')
    old.__version__ = '2.1.0'
    old.language = types.ModuleType('triton.language')
    monkeypatch.setitem(sys.modules, 'triton', old)
    monkeypatch.setitem(sys.modules, 'triton.language', old.language)
    try:
        yield [importlib.reload(m) for m in (triton_support, *KERNEL_MODULES)]
    finally:
        monkeypatch.undo()
        for module in (triton_support, *KERNEL_MODULES):
            importlib.reload(module)


def test_an_older_triton_serves_nothing_and_says_so_once(triton_2_1):
    support, haar, acc, log_softmax, gelu, level_mlp = triton_2_1
    assert not support.available() and support.TOO_OLD == '2.1.0'
    cpu = torch.zeros(1, 8, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not haar.applies(cpu)  # not a GPU tensor: nothing to say
    x = FakeCUDATensor()
    labels = types.SimpleNamespace(dim=lambda: 3, device=x.device,
                                   is_floating_point=lambda: False,
                                   shape=(1, 4, 4), numel=lambda: 16)
    with pytest.warns(UserWarning) as said:
        assert not haar.applies(x)
        assert not acc.applies(x, labels)
        assert not log_softmax.applies(x, labels)
        assert not gelu.applies(x, x)
        assert not level_mlp.applies(x)
    assert len(said) == 1
    message = str(said[0].message)
    assert 'Triton 2.1.0 is older than 3.0' in message
    assert 'PyTorch >= 2.4' in message
