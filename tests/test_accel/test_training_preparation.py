# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""prepare_for_training's layers on CPU, the GPU kernels in Triton's
interpreter standing in for a GPU's and taken wherever timed: the demo
model trains as the recipe does (bf16 autocast: the stem recomputed by
``torch.utils.checkpoint``, the level MLPs keeping their inputs, the head
recomputing its features) with the plain model's gradients."""
import copy

import torch

from mmseg_wavemix.models.accel import (BiasPassConv2d, FusedUpsample,
                                        conv_bias, conv_biases_in_one_pass,
                                        few_channel_convs_as_gemm,
                                        fuse_upsamples, fused_upsample,
                                        norm_residual, pointwise_convs_as_gemm,
                                        pointwise_gemm, timing)
from mmseg_wavemix.utils.analysis import build_model_from_config

from ..test_engine.test_fast_inference_hook import DEMO
from .test_pointwise_gemm import kernels_faster


def test_prepared_layers_train_as_the_plain_model(kernel_calls, monkeypatch):
    for module, cache in ((conv_bias, '_FASTEST_CONV_BIAS'),
                          (fused_upsample, '_FASTEST_UPSAMPLE'),
                          (norm_residual, '_FASTEST_NORM_RESIDUAL'),
                          (pointwise_gemm, '_FASTEST_MATMUL_ADD'),
                          (pointwise_gemm, '_FASTEST_LINEAR_GELU'),
                          (pointwise_gemm, '_FASTEST_BIAS_GRAD')):
        monkeypatch.setattr(module, cache, {})
    monkeypatch.setattr(timing, 'time_ms', kernels_faster(kernel_calls))
    torch.manual_seed(0)
    # 5 classes folded into the head's 8 channels
    _, plain = build_model_from_config(
        DEMO, {
            'model.backbone.depth': 1,
            'model.decode_head.channels': 8,
            'model.decode_head.num_classes': 5
        })
    plain.train()
    prepared = copy.deepcopy(plain)
    # prepare_for_training's steps (it prepares CUDA models only)
    for step in (pointwise_convs_as_gemm, few_channel_convs_as_gemm,
                 conv_biases_in_one_pass, fuse_upsamples):
        step(prepared)
    prepared.to(memory_format=torch.channels_last)
    # the stem's first convolution of 8 channels is not an Im2colGEMM (27
    # values a patch; test_pointwise_gemm.py trains that)
    assert all(isinstance(conv, BiasPassConv2d)
               for conv in prepared.backbone.stem)
    assert isinstance(prepared.decode_head.upsamples[0].conv, FusedUpsample)
    inputs = torch.randn(2, 3, 64, 64)
    for step in range(2):  # the first times the kernels
        for model in (plain, prepared):
            with torch.autocast('cpu', dtype=torch.bfloat16):
                logits = model(inputs, mode='tensor')
            logits.float().square().mean().backward()
        for (name, a), b in zip(plain.named_parameters(),
                                prepared.parameters()):
            if not name.endswith('upsample.bias'):  # BN follows: grad 0
                torch.testing.assert_close(b.grad, a.grad, rtol=5e-2,
                                           atol=5e-3, msg=name)
            a.grad = b.grad = None
    # the kernels served where timed: the stem's bias, the blocks' output
    # BatchNorm and residual, the head's upsampling
    assert {'add_bias_residual_', 'conv_transpose_k4s2'} <= set(kernel_calls)
    assert set(conv_bias._FASTEST_CONV_BIAS.values()) == {'triton'}
    assert set(norm_residual._FASTEST_NORM_RESIDUAL.values()) == {'triton'}
