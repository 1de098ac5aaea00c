# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The head's last transposed convolution with its classes padded: the
layer's output and gradients whatever the padding (the choice among them is
timed on CUDA, tests/test_cuda.py through prepare_for_training)."""
import copy
import weakref

import pytest
import torch
import torch.nn as nn

from mmseg_wavemix.models.accel.padded_classes import (
    conv_transpose_padded, conv_transpose_padded_backward, padded_channels)


@pytest.mark.parametrize('channels', [19, 24, 32])
@pytest.mark.parametrize('channels_last', [False, True])
def test_padded_classes_give_the_layers_output_and_gradients(
        channels, channels_last):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(16, 19, 4, 2, 1).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(
            memory_format=torch.channels_last).requires_grad_()
    expected = conv(x)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    with torch.no_grad():
        out = conv_transpose_padded(x, conv.weight, conv.bias, conv,
                                    channels)
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 19, 10, 14)
    grads = conv_transpose_padded_backward(grad, x.detach(), conv.weight,
                                           True, conv, channels,
                                           (True, True, True))
    for ours, param in zip(grads, (x, conv.weight, conv.bias)):
        torch.testing.assert_close(ours, param.grad)
    # what is not asked for is not computed
    assert conv_transpose_padded_backward(grad, x.detach(), conv.weight,
                                          True, conv, channels,
                                          (False, True, False))[::2] == \
        (None, None)


def test_only_cuda_channels_last_inputs_are_timed():
    conv = nn.ConvTranspose2d(16, 19, 4, 2, 1)
    x = torch.randn(1, 16, 4, 4).contiguous(
        memory_format=torch.channels_last)
    assert padded_channels(x, conv.weight, conv) == 19


@pytest.mark.parametrize('channels', [19, 24])
def test_in_16_bits_the_bias_is_added_in_the_copy(channels):
    """bf16 channels_last, as in the recipe's head: the padded output's copy
    adds the bias; its gradient is summed in float32 from the classes'
    gradient. As close to float64 as the layer's in bf16."""
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(16, 19, 4, 2, 1)
    x, grad = (torch.randn(size).contiguous(
        memory_format=torch.channels_last).bfloat16()
               for size in ((2, 16, 5, 7), (2, 19, 10, 14)))
    reference = copy.deepcopy(conv).double()
    exact = reference(x.double())
    exact.backward(grad.double())
    weight, bias = conv.weight.bfloat16(), conv.bias.bfloat16()
    layer = torch.nn.functional.conv_transpose2d(x, weight, bias, 2, 1)
    layer_grads = torch.ops.aten.convolution_backward(
        grad, x, weight, [19], [2, 2], [1, 1], [1, 1], True, [0, 0], 1,
        [False, True, True])[1:]
    out = conv_transpose_padded(x, weight, bias, conv, channels)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 19, 10, 14)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grads = conv_transpose_padded_backward(grad, x, weight, True, conv,
                                           channels, (False, True, True))
    assert grads[0] is None and grads[2].dtype == torch.float32
    expected_grads = (exact, reference.weight.grad, reference.bias.grad)
    for ours, theirs, expected in zip((out, *grads[1:]),
                                      (layer, *layer_grads), expected_grads):
        error, layer_error = ((t.double() - expected).abs().max()
                              for t in (ours, theirs))
        assert error <= 1.5 * layer_error + 1e-6 * expected.abs().max()


@pytest.mark.parametrize('channels', [19, 32])
def test_an_input_made_for_the_weight_gradient_is_dropped_before_the_next(
        monkeypatch, channels):
    """Given a function that makes the input (the head recomputes it), the
    input is made only for the weight's gradient and is gone when the
    input's gradient is computed: the same gradients as from the tensor."""
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(16, 19, 4, 2, 1).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    grad = torch.randn(2, 19, 10, 14, dtype=torch.float64)
    expected = conv_transpose_padded_backward(grad, x, conv.weight.detach(),
                                              True, conv, channels,
                                              (True, True, True))
    made = []

    def make():
        made.append(weakref.ref(x_made := x.clone()))
        return x_made

    conv2d = torch.nn.functional.conv2d

    def input_grad(*args, **kwargs):
        assert all(ref() is None for ref in made), 'the input is held'
        return conv2d(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, 'conv2d', input_grad)
    grads = conv_transpose_padded_backward(grad, make, conv.weight.detach(),
                                           True, conv, channels,
                                           (True, True, True))
    assert len(made) == 1  # made once, and gone before conv2d (above)
    for ours, theirs in zip(grads, expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    made.clear()
    # without the weight's gradient the input is not made
    grads = conv_transpose_padded_backward(grad, make, conv.weight.detach(),
                                           True, conv, channels,
                                           (True, False, True))
    assert made == [] and grads[1] is None
    torch.testing.assert_close(grads[0], expected[0], rtol=0, atol=0)
