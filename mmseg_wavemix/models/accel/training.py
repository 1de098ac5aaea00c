# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""One preparation of a model for faster training on a GPU."""
from typing import Optional, Union

import torch
import torch.nn as nn

from ..backbones.wavemix_block import WaveMixBlock
from .im2col_gemm import few_channel_convs_as_gemm
from .memory_efficient import MemoryEfficientLevelMLP
from .pointwise_gemm import pointwise_convs_as_gemm


def prepare_for_training(model: nn.Module,
                         device: Optional[Union[str, torch.device]] = None,
                         keep_norm_inputs: int = 0) -> nn.Module:
    """Prepare a model for faster training on CUDA, in place: channels_last
    memory (cuDNN's tensor-core kernels and BatchNorm work in it; NCHW
    tensors are transposed around each convolution), each 1x1 convolution
    as a GEMM with its bias in the epilogue (:class:`PointwiseGEMM`), and so
    a convolution of the image's few channels (:class:`Im2colGEMM`).
    Parameters stay the same objects (an optimizer built before keeps
    working), the state dict keeps its keys, and the losses and gradients
    are the same up to float rounding. On other devices the model is left
    as it is, but for ``keep_norm_inputs``.

    Args:
        model (nn.Module): The model (moved to ``device``).
        device (str | torch.device, optional): Where it will run.
            Default: None (where its parameters are).
        keep_norm_inputs (int): In the first ``keep_norm_inputs``
            memory-efficient WaveMix blocks, the finest level MLP keeps its
            BatchNorm's input under autocast
            (:attr:`MemoryEfficientLevelMLP.keep_norm_input`), and their
            backward does not recompute that level's transposed
            convolution, the block's largest. Time for memory: a tensor of
            the block's output size each (335 MB for WaveMix-256 at batch 5
            and 1024x2048 in float16). Default: 0.

    Returns:
        nn.Module: ``model``.
    """
    if device is not None:
        model.to(device)
    _keep_norm_inputs(model, keep_norm_inputs)
    param = next(model.parameters(), None)
    if param is None or param.device.type != 'cuda':
        return model
    pointwise_convs_as_gemm(model)
    few_channel_convs_as_gemm(model)
    return model.to(memory_format=torch.channels_last)


def _keep_norm_inputs(model: nn.Module, blocks: int) -> nn.Module:
    """Set :attr:`MemoryEfficientLevelMLP.keep_norm_input` in the finest
    level MLP of the first ``blocks`` memory-efficient
    :class:`WaveMixBlock` s of ``model``, and unset it in the others."""
    finest = [
        block.mlps[0] for block in model.modules()
        if isinstance(block, WaveMixBlock)
        and isinstance(block.mlps[0], MemoryEfficientLevelMLP)
    ]
    if not 0 <= blocks <= len(finest):
        raise ValueError(
            f'keep_norm_inputs must be between 0 and the {len(finest)} '
            'memory-efficient WaveMix blocks of this model (backbone '
            f'memory_efficient=True), got {blocks}')
    for i, mlp in enumerate(finest):
        mlp.keep_norm_input = i < blocks
    return model
