# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""The GELU backward with its bias gradient (a CUDA training path) against
PyTorch's in float64, run on CPU in Triton's interpreter."""
import pytest
import torch

from mmseg_wavemix.ops import gelu_triton as gelu_triton_module

from .test_haar_triton import TOLERANCES, make_input
from .triton_interpreter import interpreted

pytest.importorskip(
    'triton', reason='Triton is not installed (requirements/tests.txt)')


@pytest.fixture(scope='module')
def gelu_triton():
    with interpreted(gelu_triton_module) as module:
        yield module


@pytest.mark.parametrize('dtype', list(TOLERANCES))
# partial blocks of channels and several partial sums of rows (the
# interpreter's blocks: 32 channels, 64 pixels)
@pytest.mark.parametrize('shape', [(2, 200, 5, 7), (1, 8, 40, 30)])
def test_equals_pytorch_in_float64(gelu_triton, shape, dtype):
    grad = make_input(shape, dtype, channels_last=True, seed=1)
    hidden = make_input(shape, dtype, channels_last=True, seed=2) * 2
    # the same rounded inputs, in float64
    expected = torch.ops.aten.gelu_backward(grad.double(), hidden.double())
    out, bias_grad = gelu_triton.gelu_backward_with_bias_grad_(grad, hidden)
    assert out is grad and out.dtype == dtype  # in place
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])
    # summed before rounding: as close as float32 sums get
    assert bias_grad.dtype == torch.float32 and bias_grad.shape == shape[1:2]
    torch.testing.assert_close(bias_grad.double(), expected.sum((0, 2, 3)),
                               rtol=1e-5, atol=1e-4)


def test_needs_dense_channels_last_tensors_on_cuda(gelu_triton):
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match='channels_last'):
        gelu_triton.gelu_backward_with_bias_grad_(x, x.clone())
    x = x.contiguous(memory_format=torch.channels_last)
    assert not gelu_triton.applies(x, x)  # a CPU tensor: PyTorch's kernels
    with pytest.raises(ValueError, match='one shape and dtype'):
        gelu_triton.gelu_backward_with_bias_grad_(x, x.half())


@pytest.mark.parametrize('dtype', list(TOLERANCES))
# partial blocks of channels and several partial sums of rows, and fewer
# rows than one program's
@pytest.mark.parametrize('shape', [(300, 40), (7, 3)])
def test_bias_grad_equals_the_float64_column_sums(gelu_triton, shape, dtype):
    rows = make_input(shape, dtype, channels_last=False, seed=3)
    before = rows.clone()
    out = gelu_triton.bias_grad(rows)
    assert out.dtype == torch.float32 and out.shape == shape[1:]
    torch.testing.assert_close(out.double(), rows.double().sum(0), rtol=1e-5,
                               atol=1e-4)
    assert torch.equal(rows, before)  # read only
    with pytest.raises(ValueError, match=r'contiguous \(M, C\) matrix'):
        gelu_triton.bias_grad(rows.t())


def test_few_rows_are_summed_by_more_programs(gelu_triton):
    """A gradient of few rows (a coarser level's) takes runs of fewer rows
    a program, a power of two down to the block's, so that at least
    MIN_PROGRAMS programs share it; many rows take ROWS."""
    module = gelu_triton
    for m, c in ((10**6, 512), (2560, 512), (7, 3), (300, 40), (1, 1)):
        rows = module.rows_per_program(m, c)
        assert module.BM <= rows <= module.ROWS
        assert rows & (rows - 1) == 0  # a power of two

        def programs(r):
            return -(-m // r) * -(-c // module.BC)

        assert rows == module.BM or programs(rows) >= module.MIN_PROGRAMS
        # the largest such
        assert rows == module.ROWS or programs(2 * rows) < \
            module.MIN_PROGRAMS
    assert module.rows_per_program(10**6, 512) == module.ROWS
    assert module.rows_per_program(7, 3) == module.BM
