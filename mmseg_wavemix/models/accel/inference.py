# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One preparation of a trained model for fast inference."""
from typing import Optional, Union

import torch
import torch.nn as nn

from ..decode_heads.wavemix_head import WaveMixHead, folded_deconv_params
from .conv_bias import BiasPassConv2d, conv_biases_in_one_pass
from .cuda_graphs import cuda_graph_forwards
from .fuse_norm import fuse_norm_layers
from .fused_conv_gelu import fuse_conv_gelu
from .fused_level_mlp import fuse_level_mlps
from .fused_upsample import fuse_upsamples
from .im2col_gemm import Im2colGEMM, few_channel_convs_as_gemm
from .pointwise_gemm import PointwiseGEMM, pointwise_convs_as_gemm


@torch.no_grad()
def fold_head_classifier(head: WaveMixHead) -> WaveMixHead:
    """Fold ``conv_seg`` into the last transposed convolution of ``head`` for
    good: one transposed convolution straight to the classes, no weight
    product per call, one layer fewer to export. The logits are the same up
    to float rounding; it cannot be undone.

    Args:
        head (WaveMixHead): A head with nothing between its last upsampling
            and ``conv_seg`` (:attr:`WaveMixHead.can_fold_classifier`).

    Returns:
        WaveMixHead: ``head``, its ``conv_seg`` an identity.
    """
    if not head.can_fold_classifier:
        raise ValueError(
            'fold_head_classifier needs a plain 1x1 conv_seg right after the '
            'last upsampling; this head has a norm, activation or dropout '
            'there or is folded already (norm_cfg/act_cfg None and '
            'dropout_ratio=0 make it foldable)')
    deconv, cls = head.upsamples[-1].conv, head.conv_seg
    weight, bias = folded_deconv_params(deconv, cls)
    folded = nn.ConvTranspose2d(
        deconv.in_channels,
        cls.out_channels,
        deconv.kernel_size,
        stride=deconv.stride,
        padding=deconv.padding,
        output_padding=deconv.output_padding,
        dilation=deconv.dilation,
        device=weight.device,
        dtype=weight.dtype)
    folded.weight.copy_(weight)
    folded.bias.copy_(bias)
    folded.train(deconv.training)
    head.upsamples[-1].conv = folded
    head.conv_seg = nn.Identity()
    head.fold_classifier = False  # the plain path now runs the folded layer
    return head


def prepare_for_inference(model: nn.Module,
                          device: Optional[Union[str, torch.device]] = None,
                          fuse_norm: bool = True,
                          fold_classifier: bool = True,
                          fuse_activation: bool = True,
                          channels_last: bool = True,
                          cuda_graphs: bool = True,
                          compile: bool = False,
                          fuse_mlp: Optional[bool] = None) -> nn.Module:
    """Prepare a trained model for fast inference, in place. Each step is
    chosen here, once, for the device (and the CPU's instructions), and the
    logits stay the same up to float rounding:

    - BatchNorm folded into the (transposed) convolution before it.
    - A :class:`WaveMixHead`'s classifier folded into its last transposed
      convolution where it applies and saves FLOPs (fewer classes than
      channels), see :func:`fold_head_classifier`.
    - On CPU, each WaveMix level's GELU run inside its first convolution by
      oneDNN, in float32 and, where the CPU has bf16 convolutions, in
      bfloat16 (:class:`FusedConvGELU`); other dtypes run the plain layers.
    - On CUDA, each 1x1 convolution run as a GEMM with the bias in its
      epilogue (:class:`PointwiseGEMM`): no separate pass to add it; the
      same for a convolution of the image's few channels, its patches the
      rows of the matrix (:class:`Im2colGEMM`); other convolutions' bias
      added by one Triton pass where timed faster than PyTorch's
      (:class:`BiasPassConv2d`). Under autocast their weights are cast
      once, not at every call.
    - On CUDA (unless compiled), each WaveMix level MLP in three kernels,
      the GELU, biases and residual computed inside the matrix products
      (:class:`FusedLevelMLP`, Triton), in float16/bfloat16; float32 runs
      the layers. So the other 2x upsamplings (4x4/2 transposed
      convolutions: the decode head's) with their bias
      (:class:`FusedUpsample`).
    - channels_last memory, which oneDNN's convolutions and cuDNN's tensor
      cores prefer.
    - On CUDA, the forward of the backbone and the head replayed as CUDA
      graphs, one recorded per input size (:class:`CUDAGraphs`): at batch 1
      the host cannot launch the kernels as fast as the GPU runs them.
      Optionally (``compile``) recorded from ``torch.compile``'s kernels.

    Args:
        model (nn.Module): The model (moved to ``device``, set to eval).
        device (str | torch.device, optional): Where it will run.
            Default: None (where its parameters are).
        fuse_norm, fold_classifier, fuse_activation, channels_last,
            cuda_graphs (bool): Each step. Default: True.
        compile (bool): With ``cuda_graphs``, record the graphs from
            ``torch.compile``'s kernels (about a minute of compilation at
            the first call of each input size). Default: False.
        fuse_mlp (bool, optional): The fused level MLPs and upsamplings;
            their kernels are tuned at the first call of each input size
            (seconds). Not with ``compile``: Inductor fuses the layers its
            own way. Default: None (on CUDA unless ``compile``).

    Returns:
        nn.Module: ``model``.
    """
    if fuse_mlp and compile:
        raise ValueError('fuse_mlp and compile are two ways to fuse the level '
                         'MLPs; set one of them')
    if fuse_mlp is None:
        fuse_mlp = not compile
    if device is not None:
        model.to(device)
    param = next(model.parameters(), None)
    device = torch.device('cpu') if param is None else param.device
    model.eval()
    if fuse_norm:
        fuse_norm_layers(model)
    head = getattr(model, 'decode_head', None)
    if fold_classifier and isinstance(head, WaveMixHead) and \
            head.fold_saves_flops:
        fold_head_classifier(head)
    if fuse_activation and device.type == 'cpu':
        fuse_conv_gelu(model)
    if fuse_mlp and device.type == 'cuda':
        fuse_upsamples(fuse_level_mlps(model))
    if channels_last and device.type == 'cuda':  # they need channels_last
        pointwise_convs_as_gemm(model)
        few_channel_convs_as_gemm(model)
        conv_biases_in_one_pass(model)
        for module in model.modules():
            if isinstance(module, (PointwiseGEMM, Im2colGEMM,
                                   BiasPassConv2d)):
                module.fixed_weights = True  # cast once under autocast
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if cuda_graphs and device.type == 'cuda':
        cuda_graph_forwards(model, compile=compile)
    return model
