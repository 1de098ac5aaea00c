# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Every speed path of the package, apart from the models they speed up.

- Inference: :func:`prepare_for_inference` (BatchNorm and classifier
  folding, the GELU fused into its convolution on CPU, 1x1 and image-stem
  convolutions as GEMMs with their bias and other convolutions' bias in
  one pass on CUDA, optionally each level MLP in three Triton and cuBLAS
  kernels and the other upsamplings in one on CUDA, channels_last, CUDA
  graphs), what ``tools/test.py --fast``, ``FastInferenceHook`` and
  ``tools/benchmark.py`` call.
- Training: :class:`MemoryEfficientLevelMLP`, the level MLP that
  ``WaveMix(memory_efficient=True)`` builds; on CUDA
  :func:`prepare_for_training` (channels_last, 1x1 and image-stem
  convolutions as GEMMs, other convolutions' bias in one pass, the head's
  upsamplings with their bias in one kernel, optionally CUDA graphs of
  forward and backward); the blocks'
  output BatchNorm and residual in one pass (:mod:`.norm_residual`); the
  choice among equivalent kernels (:mod:`.timing`).

Each path equals the plain model up to float rounding (tests/test_accel).
"""
from .conv_bias import (BiasPassConv2d, conv2d_bias_pass,
                        conv_biases_in_one_pass)
from .cuda_graphs import (CUDAGraphs, TrainingCUDAGraphs, cuda_graph_forwards,
                          training_cuda_graphs)
from .fuse_norm import fuse_conv_bn, fuse_norm_layers
from .fused_conv_gelu import (FusedConvGELU, cpu_has_bf16_convolution,
                              fusable_dtypes, fuse_conv_gelu)
from .fused_level_mlp import FusedLevelMLP, can_fuse_level_mlp, fuse_level_mlps
from .fused_upsample import FusedUpsample, can_fuse_upsample, fuse_upsamples
from .im2col_gemm import Im2colGEMM, few_channel_convs_as_gemm
from .inference import fold_head_classifier, prepare_for_inference
from .memory_efficient import (BlockLevels, MemoryEfficientLevelMLP,
                               batch_norm_add, conv_gelu_conv2d,
                               conv_transpose_of_recomputed,
                               keep_wavelet_levels,
                               level_mlp_keeping_its_input,
                               mix_levels_keeping_block_input)
from .pointwise_gemm import PointwiseGEMM, pointwise_convs_as_gemm
from .training import prepare_for_training

__all__ = [
    'BiasPassConv2d', 'BlockLevels', 'CUDAGraphs', 'FusedConvGELU',
    'FusedLevelMLP', 'FusedUpsample', 'Im2colGEMM', 'MemoryEfficientLevelMLP',
    'PointwiseGEMM', 'TrainingCUDAGraphs', 'batch_norm_add',
    'can_fuse_level_mlp', 'can_fuse_upsample', 'conv2d_bias_pass',
    'conv_biases_in_one_pass', 'conv_gelu_conv2d',
    'conv_transpose_of_recomputed',
    'cpu_has_bf16_convolution', 'cuda_graph_forwards',
    'few_channel_convs_as_gemm', 'fold_head_classifier', 'fuse_conv_bn',
    'fuse_conv_gelu', 'fuse_level_mlps', 'fuse_norm_layers',
    'fuse_upsamples', 'fusable_dtypes', 'keep_wavelet_levels',
    'level_mlp_keeping_its_input',
    'mix_levels_keeping_block_input', 'pointwise_convs_as_gemm',
    'prepare_for_inference', 'prepare_for_training', 'training_cuda_graphs'
]
