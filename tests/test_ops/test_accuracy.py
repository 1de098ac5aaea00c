# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The counts behind the heads' pixel accuracy: the Triton kernel (here in
Triton's interpreter, on a GPU in tests/test_cuda.py) counts what
PyTorch's argmax does, ties included; so does the fallback."""
import pytest
import torch

from mmseg_wavemix.ops import accuracy as accuracy_module

from .triton_interpreter import interpreted

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')


@pytest.fixture
def accuracy(monkeypatch):
    """The module in Triton's interpreter, its kernel serving CPU tensors;
    the kernel's calls are counted in ``accuracy.calls``."""
    with interpreted(accuracy_module) as module:
        calls = []
        counts = module._triton_counts
        monkeypatch.setattr(module, 'applies', lambda logits, labels:
                            logits.dim() == 4)
        monkeypatch.setattr(
            module, '_triton_counts',
            lambda *args: calls.append(args) or counts(*args))
        module.calls = calls
        yield module
        monkeypatch.undo()


def logits_and_labels(classes, channels_last, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # a few integer values: many pixels with tied largest logits; 2x9x9 =
    # 162 pixels: two blocks of PIXELS (128), the second partly outside
    logits = torch.randint(0, 3, (2, classes, 9, 9),
                           generator=generator).to(dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (2, 9, 9), generator=generator)
    labels[torch.rand(2, 9, 9, generator=generator) < 0.2] = 255
    return logits, labels


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('classes', [19, 5, 1])
def test_the_kernel_counts_as_argmax_does(accuracy, classes, channels_last,
                                          dtype):
    logits, labels = logits_and_labels(classes, channels_last, dtype)
    correct, labelled = accuracy.correct_and_labelled(logits, labels, 255)
    assert len(accuracy.calls) == 1
    valid = labels != 255
    assert labelled.item() == valid.sum().item() > 0
    assert correct.item() == ((logits.argmax(1) == labels) &
                              valid).sum().item()
    if classes > 1:  # not all correct or all wrong: the test can fail
        assert 0 < correct.item() < labelled.item()


@pytest.mark.parametrize('channels_last', [False, True])
def test_other_shapes_and_devices_count_as_argmax(channels_last):
    logits, labels = logits_and_labels(5, channels_last, torch.float32)
    # argmax takes a NaN as the largest (the first NaN)
    logits[0, 3, 0, 0] = logits[0, 4, 0, 0] = float('nan')
    labels[0, 0, 0] = 3
    logits[1, 2, 1, 1] = float('nan')
    labels[1, 1, 1] = 4
    assert not accuracy_module.applies(logits, labels)  # CPU
    correct, labelled = accuracy_module.correct_and_labelled(
        logits, labels, 255)
    valid = labels != 255
    assert (correct.item(), labelled.item()) == (
        ((logits.argmax(1) == labels) & valid).sum().item(),
        valid.sum().item())
    flat = logits.permute(0, 2, 3, 1).reshape(-1, 5)  # (N, C): classifier
    correct, labelled = accuracy_module.correct_and_labelled(
        flat, labels.flatten(), 255)
    assert labelled.item() == valid.sum().item()
