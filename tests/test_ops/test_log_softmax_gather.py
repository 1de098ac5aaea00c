# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The focal loss's log-probability of the label and its gradient: the
Triton kernels (here in Triton's interpreter, on a GPU in
tests/test_cuda.py) against float64 autograd and PyTorch's path."""
import pytest
import torch
import torch.nn.functional as F

from mmseg_wavemix.ops import accuracy
from mmseg_wavemix.ops import log_softmax_gather as module_under_test

from .triton_interpreter import interpreted

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')

# float32 results of float16/bfloat16 inputs: the kernels compute in float32
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
}


@pytest.fixture
def ops(monkeypatch):
    """The module in Triton's interpreter, its kernels serving CPU tensors;
    their calls are counted in ``ops.calls``. The accuracy module too: its
    kernels' helper serves these."""
    with interpreted(accuracy, module_under_test) as module:
        calls = []
        kernel = module._log_softmax_gather_kernel
        monkeypatch.setattr(
            module, 'applies', lambda logits, labels: logits.dim() == 4)

        class Counted:

            def __getitem__(self, grid):
                calls.append(grid)
                return kernel[grid]

        monkeypatch.setattr(module, '_log_softmax_gather_kernel', Counted())
        module.calls = calls
        yield module
        monkeypatch.undo()


def float64_reference(logits, labels, grad):
    """log_softmax at the labels and its logits' gradient by autograd in
    float64."""
    x = logits.double().detach().requires_grad_()
    out = F.log_softmax(x, 1).gather(1, labels.unsqueeze(1)).squeeze(1)
    out.backward(grad.double())
    return out, x.grad


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('classes', [19, 1])
def test_the_kernels_equal_float64_autograd(ops, classes, channels_last,
                                            dtype):
    generator = torch.Generator().manual_seed(classes)
    # 2x7x11 = 154 pixels: two blocks of accuracy.PIXELS (128), the second
    # partly outside
    logits = (4 * torch.randn(2, classes, 7, 11, generator=generator)).to(
        dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (2, 7, 11), generator=generator)
    grad = torch.randn(2, 7, 11, generator=generator)
    expected, expected_grad = float64_reference(logits, labels, grad)
    out = ops.log_softmax_gather(logits, labels)
    assert out.dtype == torch.float32 and out.shape == labels.shape
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])
    grad_logits = ops.log_softmax_gather_backward(grad, logits, labels)
    assert grad_logits.dtype == dtype
    assert grad_logits.stride() == logits.stride()
    torch.testing.assert_close(grad_logits.double(), expected_grad,
                               **TOLERANCES[dtype])
    assert len(ops.calls) == 2
    # PyTorch's path (on CPU; a GPU without Triton) agrees
    torch.testing.assert_close(
        ops.log_softmax_gather(logits, labels, use_kernels=False), out,
        **TOLERANCES[dtype])
    torch.testing.assert_close(
        ops.log_softmax_gather_backward(grad, logits, labels,
                                        use_kernels=False).float(),
        grad_logits.float(), **TOLERANCES[dtype])
    assert len(ops.calls) == 2


def test_an_expanded_gradient_and_no_pixels(ops):
    # the gradient of a sum: one value expanded over the pixels
    logits = torch.randn(1, 3, 4, 5)
    labels = torch.randint(0, 3, (1, 4, 5))
    grad = torch.tensor(0.5).expand(1, 4, 5)
    expected = float64_reference(logits, labels, grad)[1]
    torch.testing.assert_close(
        ops.log_softmax_gather_backward(grad, logits, labels).double(),
        expected)
    empty = torch.randn(0, 3, 4, 5)
    assert ops.log_softmax_gather(empty, labels[:0]).shape == (0, 4, 5)
    assert ops.log_softmax_gather_backward(
        grad[:0], empty, labels[:0]).shape == empty.shape
