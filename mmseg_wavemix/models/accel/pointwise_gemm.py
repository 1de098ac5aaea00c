# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""1x1 convolutions as GEMMs with the bias in the epilogue, for GPUs."""
from functools import partial
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmseg_wavemix.ops import gelu_triton, level_mlp_triton, triton_support

from .timing import fastest

# The way found fastest for ``a @ w + c`` (device, dtype, K, columns, rows
# rounded up to a power of two): 'addmm' or 'triton'.
_FASTEST_MATMUL_ADD: Dict[tuple, str] = {}
# The way found fastest for a 1x1 convolution and GELU of a concatenation
# (device, dtype, channels of each part, output channels, rows rounded up to
# a power of two, the pre-activation stored or not): 'layers' or 'triton'.
_FASTEST_LINEAR_GELU: Dict[tuple, str] = {}
# The way found fastest for the column sums of a gradient's rows (device,
# dtype, columns, rows rounded up to a power of two): 'pytorch' or 'triton'.
_FASTEST_BIAS_GRAD: Dict[tuple, str] = {}


def inference_params(
    layer: nn.Module,
    x: Tensor,
    weight_as: Optional[Callable[[Tensor], Tensor]] = None
) -> Tuple[Tensor, Optional[Tensor]]:
    """``layer``'s weight and bias for computing ``x``: under autocast, in
    inference (no gradients) of a layer whose weights are fixed
    (``fixed_weights``, which :func:`prepare_for_inference` sets), cast to
    autocast's dtype once and kept while they stay the same tensors;
    otherwise as they are, for autocast to cast at each call (inside a CUDA
    graph a kernel each, replayed with every image). ``weight_as`` (the
    weight in the form the layer computes with, e.g. a padded matrix) is
    applied to the weight either way, and kept with the cast."""
    weight, bias = layer.weight, layer.bias
    device = x.device.type
    if not getattr(layer, 'fixed_weights', False) or \
            torch.is_grad_enabled() or \
            not torch.is_autocast_enabled(device) or \
            weight.dtype != torch.float32 or torch.jit.is_tracing() or \
            torch.compiler.is_compiling():
        return weight if weight_as is None else weight_as(weight), bias
    dtype = torch.get_autocast_dtype(device)
    key = (dtype, *((p.data_ptr(), p._version) for p in (weight, bias)
                    if p is not None))
    cached = layer.__dict__.get('_cast_params')
    if cached is None or cached[0] != key:
        weight = weight.to(dtype)
        cached = key, (weight if weight_as is None else weight_as(weight),
                       None if bias is None else bias.to(dtype))
        layer.__dict__['_cast_params'] = cached
    return cached[1]


def is_pointwise_conv2d(conv: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (no subclass) that is a per-pixel matrix
    product: 1x1 kernel, stride 1, no padding, one group."""
    return type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and \
        conv.stride == (1, 1) and conv.dilation == (1, 1) and \
        conv.groups == 1 and conv.padding in ((0, 0), 'valid') and \
        conv.padding_mode == 'zeros'


class PointwiseGEMM(nn.Conv2d):
    """A 1x1 convolution run as one matrix product with the bias added in it.

    A channels_last tensor (N, C, H, W) is the row-major (N*H*W, C) matrix,
    so the convolution is ``F.linear`` on that view, which cuBLASLt computes
    with the bias in its epilogue. cuDNN's 1x1 convolution calls the same
    GEMM kernels but adds the bias afterwards in a separate pass over the
    output (in WaveMix's fp16 inference on an H100 bias additions took a
    third of the GPU time). Other layouts, or while tracing (FLOP counters,
    ONNX), run the convolution itself.

    Build it with :meth:`from_conv`; it is an ``nn.Conv2d``, so code that
    reads ``weight`` or ``bias`` keeps working.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> 'PointwiseGEMM':
        """A PointwiseGEMM sharing the parameters of ``conv``."""
        if not is_pointwise_conv2d(conv):
            raise TypeError('PointwiseGEMM needs a 1x1 nn.Conv2d with stride '
                            f'1, no padding and one group, got {conv!r}')
        gemm = cls(conv.in_channels, conv.out_channels, 1,
                   bias=conv.bias is not None, device='meta')
        gemm.weight, gemm.bias = conv.weight, conv.bias
        gemm.train(conv.training)
        return gemm

    def forward(self, x: Tensor) -> Tensor:
        out = pointwise_linear(x, *inference_params(self, x))
        return super().forward(x) if out is None else out


def _rows(x: Tensor) -> Optional[Tensor]:
    """The (N*H*W, C) row-major view of a channels_last (N, C, H, W) tensor,
    or None for other layouts and while tracing."""
    rows = x.permute(0, 2, 3, 1)
    if not rows.is_contiguous() or torch.jit.is_tracing():
        return None
    return rows.view(-1, rows.shape[-1])


def _image(rows: Tensor, like: Tensor) -> Tensor:
    """Rows (N*H*W, C') back to a channels_last (N, C', H, W) tensor."""
    n, _, h, w = like.shape
    return rows.view(n, h, w, -1).permute(0, 3, 1, 2)


class _LinearFunction(torch.autograd.Function):
    """``F.linear(rows, matrix, bias)`` in training whose bias gradient is
    :func:`bias_grad`'s (autograd's is PyTorch's float32 sum over the rows,
    at a quarter of an H100's bandwidth); in ``dtype``, as autocast
    computes ``F.linear``."""

    @staticmethod
    def forward(ctx, rows: Tensor, matrix: Tensor, bias: Tensor,
                dtype: torch.dtype) -> Tensor:
        needs = ctx.needs_input_grad
        ctx.dtypes = matrix.dtype, bias.dtype
        rows, matrix, bias = (t.to(dtype) for t in (rows, matrix, bias))
        ctx.save_for_backward(rows if needs[1] else None,
                              matrix if needs[0] else None)
        return F.linear(rows, matrix, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        rows, matrix = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_rows = grad.mm(matrix) if needs[0] else None
        grad_matrix = grad.t().mm(rows).to(ctx.dtypes[0]) if needs[1] \
            else None
        grad_bias = bias_grad(grad).to(ctx.dtypes[1]) if needs[2] else None
        return grad_rows, grad_matrix, grad_bias, None


def linear(rows: Tensor, matrix: Tensor,
           bias: Optional[Tensor]) -> Tensor:
    """``F.linear(rows, matrix, bias)``; where the bias needs a gradient and
    the GPU kernels serve (float16 or bfloat16, autocast's or the rows'),
    with :func:`bias_grad` for it (:class:`_LinearFunction`)."""
    device = rows.device.type
    dtype = torch.get_autocast_dtype(device) if \
        torch.is_autocast_enabled(device) else rows.dtype
    if bias is None or not (torch.is_grad_enabled() and bias.requires_grad) \
            or not level_mlp_triton.applies(rows, dtype):
        return F.linear(rows, matrix, bias)
    return _LinearFunction.apply(rows, matrix, bias, dtype)


def pointwise_linear(x: Tensor, weight: Tensor,
                     bias: Optional[Tensor]) -> Optional[Tensor]:
    """A 1x1 convolution of a channels_last ``x`` as ``F.linear`` on its
    rows (the bias in the GEMM's epilogue; :func:`linear`), or None where
    ``x`` is not channels_last or a trace is being recorded."""
    rows = _rows(x)
    if rows is None:
        return None
    return _image(linear(rows, weight.view(weight.shape[0], -1), bias), x)


def pointwise_linear_backward(grad_out: Tensor,
                              x: Tensor,
                              weight: Tensor,
                              needs: Tuple[bool, bool, bool],
                              grad_x_plus: Optional[Tensor] = None):
    """Gradients of :func:`pointwise_linear` for ``x``, the weight and the
    bias (each None where not needed), in the dtype of ``x``, as two GEMMs
    and a column sum; None where the tensors are not channels_last.
    ``grad_x_plus`` (another gradient of ``x``) is added to ``x``'s, in the
    GEMM (:func:`matmul_add`) where it is channels_last too."""
    grad_rows, rows = _rows(grad_out), _rows(x)
    if grad_rows is None or rows is None:
        return None
    matrix = weight.view(weight.shape[0], -1)
    grad_x = None
    if needs[0]:
        plus_rows = None if grad_x_plus is None or \
            grad_x_plus.dtype != grad_rows.dtype else _rows(grad_x_plus)
        if plus_rows is not None:
            grad_x = _image(matmul_add(grad_rows, matrix, plus_rows), x)
        else:
            grad_x = _image(grad_rows.mm(matrix), x)
            if grad_x_plus is not None:
                grad_x.add_(grad_x_plus)
    grad_weight = grad_rows.t().mm(rows).view_as(weight) if needs[1] \
        else None
    grad_bias = bias_grad(grad_rows) if needs[2] else None
    return grad_x, grad_weight, grad_bias


def bias_grad(rows: Tensor) -> Tensor:
    """The gradient of a bias added to each row of a GEMM's output, from the
    output's gradient ``rows`` (M, C): its column sums in float32, by
    PyTorch's sum, or on a GPU by whichever of it and Triton's one pass
    (:func:`~mmseg_wavemix.ops.gelu_triton.bias_grad`) was faster at the
    first call of the size (:func:`~.timing.fastest`)."""
    calls = dict(pytorch=partial(torch.sum, rows, 0, dtype=torch.float32))
    if not (triton_support.serves(rows) and rows.is_contiguous()):
        return calls['pytorch']()
    calls['triton'] = partial(gelu_triton.bias_grad, rows)
    key = (rows.device, rows.dtype, rows.shape[1],
           level_mlp_triton.tuning_size(rows.shape[0]))
    what = f'bias gradient of {rows.shape[0]}x{rows.shape[1]} rows'
    return calls[fastest(calls, rows.device, _FASTEST_BIAS_GRAD, key,
                         always='pytorch', what=what, reference='pytorch')]()


def channel_grad(grad_out: Tensor) -> Tensor:
    """The gradient of a per-channel bias added to an (N, C, H, W) output,
    from the output's gradient: in float16 and bfloat16 :func:`bias_grad`
    of its rows where it is dense channels_last (a convolution's backward
    sums its bias gradient by PyTorch, whose float32 sum ran at a quarter of
    an H100's bandwidth), else PyTorch's sum over the other dimensions; in
    float32 or the gradient's wider dtype."""
    rows = _rows(grad_out) if grad_out.dim() == 4 and grad_out.dtype in (
        torch.float16, torch.bfloat16) else None
    if rows is None:
        return grad_out.sum(
            (0, 2, 3), dtype=torch.promote_types(grad_out.dtype,
                                                 torch.float32))
    return bias_grad(rows)


def pointwise_weight_grad(grad_out: Tensor,
                          parts: Sequence[Tensor]) -> Optional[Tensor]:
    """The weight gradient (CO, C, 1, 1) of a 1x1 convolution of
    ``cat(parts, 1)``, a GEMM per part (the concatenation is not made), in
    the dtype of ``grad_out``; None where a tensor is not channels_last."""
    grad_rows, rows = _rows(grad_out), [_rows(p) for p in parts]
    if grad_rows is None or any(r is None for r in rows):
        return None
    grad = torch.cat([grad_rows.t().mm(r) for r in rows], 1)
    return grad.view(*grad.shape, 1, 1)


class LinearGELU(NamedTuple):
    """What :func:`pointwise_linear_gelu` computed: the input as one tensor
    (None where the concatenation was not made), the GELU's input (None
    where not asked for and not made) and its output."""
    inputs: Optional[Tensor]
    pre_activation: Optional[Tensor]
    out: Tensor


def _linear_gelu_by_layers(a: Tensor, b: Optional[Tensor], weight: Tensor,
                           bias: Optional[Tensor]) -> LinearGELU:
    inputs = a if b is None else torch.cat((a, b), 1)
    hidden = pointwise_linear(inputs, weight, bias)
    return LinearGELU(inputs, hidden, F.gelu(hidden))


def _linear_gelu_by_triton(
        a: Tensor, b: Optional[Tensor], weight: Tensor, bias: Tensor,
        pre_activation: bool,
        kernel_weights: Optional[Tuple[Tensor, Tensor]] = None
) -> LinearGELU:
    if kernel_weights is None:
        kernel_weights = (level_mlp_triton.pack_linear_weight(weight),
                          bias.float())
    out = level_mlp_triton.linear_gelu(a, b, *kernel_weights,
                                       pre_activation=pre_activation)
    inputs = a if b is None else None  # no concatenation made
    return LinearGELU(inputs, *out) if pre_activation else \
        LinearGELU(inputs, None, out)


def pointwise_linear_gelu(a: Tensor,
                          b: Optional[Tensor],
                          weight: Tensor,
                          bias: Optional[Tensor],
                          pre_activation: bool = False,
                          kernel_weights: Optional[Tuple[Tensor,
                                                         Tensor]] = None
                          ) -> Optional[LinearGELU]:
    """``gelu(conv1x1(cat([a, b], 1)))`` (exact GELU) of channels_last
    ``a`` and ``b`` (``b`` None: of ``a``): the concatenation,
    ``F.linear`` with the bias in its epilogue and the GELU's pass; or on a
    GPU in float16 and bfloat16 (whose tensor cores Triton's products use,
    :func:`~mmseg_wavemix.ops.level_mlp_triton.products_apply`), where it
    agreed with them and was faster
    at the first call of the size (:func:`~.timing.fastest`), Triton's
    :func:`~mmseg_wavemix.ops.level_mlp_triton.linear_gelu`: no
    concatenation in memory, the GELU (and the store of its input, with
    ``pre_activation``) in the product's epilogue. None where ``a`` or
    ``b`` is not channels_last or a trace is being recorded.

    Args:
        a (Tensor): (N, CA, H, W), channels_last.
        b (Tensor, optional): (N, CB, H, W), the rest of the input channels.
        weight (Tensor): (CO, CA + CB, 1, 1), in the inputs' dtype.
        bias (Tensor, optional): (CO, ).
        pre_activation (bool): The GELU's input is needed too (its backward).
            Default: False.
        kernel_weights (tuple[Tensor, Tensor], optional): ``weight`` as
            :func:`~mmseg_wavemix.ops.level_mlp_triton.pack_linear_weight`
            packs it and ``bias`` in float32, as the kernel takes them, where
            the caller keeps them (fixed weights); else they are made at each
            call of the kernel. Default: None.

    Returns:
        LinearGELU | None: The concatenation where it was made (the weight's
        gradient can use it), the GELU's input and output.
    """
    if _rows(a) is None or (b is not None and _rows(b) is None):
        return None
    layers = partial(_linear_gelu_by_layers, a, b, weight, bias)
    if bias is None or not level_mlp_triton.products_apply(a) or \
            (b is not None and b.dtype != a.dtype):
        return layers()
    calls = dict(layers=layers,
                 triton=partial(_linear_gelu_by_triton, a, b, weight, bias,
                                pre_activation, kernel_weights))
    cb = 0 if b is None else b.shape[1]
    rows = a.numel() // max(a.shape[1], 1)
    key = (a.device, a.dtype, a.shape[1], cb, weight.shape[0],
           level_mlp_triton.tuning_size(rows), pre_activation)
    what = (f'gelu(conv1x1) of {a.shape[1]} + {cb} channels to '
            f'{weight.shape[0]} ({rows} pixels' +
            (', with the pre-activation)' if pre_activation else ')'))
    return calls[fastest(calls, a.device, _FASTEST_LINEAR_GELU, key,
                         always='layers', what=what, reference='layers')]()


def matmul_add(a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    """``a @ w + c`` for matrices: ``torch.addmm``, or on a GPU in float16
    and bfloat16 (see :func:`~mmseg_wavemix.ops.level_mlp_triton.
    products_apply`) whichever of it and Triton's
    :func:`~mmseg_wavemix.ops.level_mlp_triton.matmul_add` (one pass over
    ``c``, where addmm copies it to its output first) was faster at the
    first call of the size (:func:`~.timing.fastest`)."""
    calls = dict(addmm=partial(torch.addmm, c, a, w))
    if not level_mlp_triton.products_apply(a):
        return calls['addmm']()
    calls['triton'] = partial(level_mlp_triton.matmul_add, a, w, c)
    key = (a.device, a.dtype, a.shape[1], w.shape[1],
           level_mlp_triton.tuning_size(a.shape[0]))
    what = f'a @ w + c ({a.shape[0]}x{a.shape[1]} @ {w.shape[0]}x{w.shape[1]})'
    return calls[fastest(calls, a.device, _FASTEST_MATMUL_ADD, key,
                         always='addmm', what=what, reference='addmm')]()


def pointwise_convs_as_gemm(module: nn.Module) -> nn.Module:
    """Replace every 1x1 ``nn.Conv2d`` in ``module`` by a
    :class:`PointwiseGEMM` sharing its weights, in place.

    Args:
        module (nn.Module): A model or any part of it.

    Returns:
        nn.Module: ``module``.
    """
    return replace_layers(module, is_pointwise_conv2d,
                          PointwiseGEMM.from_conv)


def replace_layers(module: nn.Module, accepts: Callable[[nn.Module], bool],
                   build: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace every submodule ``layer`` of ``module`` that ``accepts`` by
    ``build(layer)``, in place; ``module``."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if accepts(child):
                setattr(parent, name, build(child))
    return module
