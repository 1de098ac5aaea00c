# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One preparation of a model for faster training on a GPU."""
from typing import Optional, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log

from .conv_bias import conv_biases_in_one_pass
from .cuda_graphs import training_cuda_graphs
from .fused_upsample import fuse_upsamples
from .im2col_gemm import few_channel_convs_as_gemm
from .memory_efficient import keep_wavelet_levels
from .pointwise_gemm import pointwise_convs_as_gemm


def prepare_for_training(model: nn.Module,
                         device: Optional[Union[str, torch.device]] = None,
                         cuda_graphs: bool = False,
                         keep_levels: bool = False) -> nn.Module:
    """Prepare a model for faster training on CUDA, in place: channels_last
    memory (cuDNN's tensor-core kernels and BatchNorm work in it; NCHW
    tensors are transposed around each convolution), each 1x1 convolution
    as a GEMM with its bias in the epilogue (:class:`PointwiseGEMM`), and so
    a convolution of the image's few channels (:class:`Im2colGEMM`), the
    bias of other convolutions added in one Triton pass where timed faster
    (:class:`BiasPassConv2d`), and
    the 2x upsamplings outside the level MLPs (the decode head's) with
    their bias in the kernel (:class:`FusedUpsample`; PyTorch adds it in a
    pass of its own).
    Parameters stay the same objects (an optimizer built before keeps
    working), the state dict keeps its keys, and the losses and gradients
    are the same up to float rounding. On other devices the model is left
    as it is.

    With ``cuda_graphs`` each part's training forward and backward are also
    replayed as CUDA graphs (:func:`training_cuda_graphs`), recorded
    together at the second training step (the first runs eagerly): the
    host then launches each pass at once. In one
    process only (with several, the model is left without, saying so once).

    Args:
        model (nn.Module): The model (moved to ``device``).
        device (str | torch.device, optional): Where it will run.
            Default: None (where its parameters are).
        cuda_graphs (bool): Replay training as CUDA graphs. Default: False.
        keep_levels (bool): Memory-efficient WaveMix blocks keep their
            wavelet levels instead of recomputing them in backward
            (:func:`keep_wavelet_levels`: time for memory). Default: False.

    Returns:
        nn.Module: ``model``.
    """
    if device is not None:
        model.to(device)
    param = next(model.parameters(), None)
    if param is None or param.device.type != 'cuda':
        return model
    pointwise_convs_as_gemm(model)
    few_channel_convs_as_gemm(model)
    conv_biases_in_one_pass(model)
    fuse_upsamples(model)
    keep_wavelet_levels(model, keep_levels)
    model.to(memory_format=torch.channels_last)
    if cuda_graphs:
        if dist.is_available() and dist.is_initialized() and \
                dist.get_world_size() > 1:
            # logged, not warned: the recipe asks for graphs on any count of
            # GPUs, and several train as they would without asking
            print_log(
                'prepare_for_training: no CUDA graphs for training in '
                'several processes (SyncBN\'s all-reduce would be recorded '
                'in them); training without', logger='current')
        else:
            training_cuda_graphs(model)
    return model
