# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from mmseg_wavemix.models.accel import prepare_for_inference


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Prepare the model for fast testing once its weights are loaded, with
    :func:`~mmseg_wavemix.models.accel.prepare_for_inference` (folded
    BatchNorm and classifier, the GELU fused on CPU, fused level MLPs, 1x1
    convolutions as GEMMs and CUDA graphs on CUDA, channels_last).

    The logits are the same up to float rounding. It acts before testing
    only (``tools/test.py --fast`` adds it): folded layers cannot be trained,
    so validation during training is left alone.

    Args:
        fuse_norm (bool): Fold BatchNorm layers. Default: True.
        fold_classifier (bool): Fold a WaveMixHead's classifier where it
            saves FLOPs. Default: True.
        fuse_activation (bool): Fuse each WaveMix level's GELU into its
            first convolution (CPU). Default: True.
        channels_last (bool): Convert the model to channels_last (and on
            CUDA run its 1x1 convolutions as GEMMs). Default: True.
        cuda_graphs (bool): On CUDA, replay the backbone and head as CUDA
            graphs, one recorded per input size. Default: True.
        compile (bool): Record the graphs from ``torch.compile``'s kernels
            (a minute of compilation per input size). Default: False.
        fuse_mlp (bool, optional): On CUDA, each WaveMix level MLP in three
            fused kernels (:class:`~mmseg_wavemix.models.accel.FusedLevelMLP`).
            Default: None (on CUDA unless ``compile``).
    """

    priority = 'LOW'

    def __init__(self,
                 fuse_norm: bool = True,
                 fold_classifier: bool = True,
                 fuse_activation: bool = True,
                 channels_last: bool = True,
                 cuda_graphs: bool = True,
                 compile: bool = False,
                 fuse_mlp: Optional[bool] = None):
        self.steps = dict(
            fuse_norm=fuse_norm,
            fold_classifier=fold_classifier,
            fuse_activation=fuse_activation,
            channels_last=channels_last,
            cuda_graphs=cuda_graphs,
            compile=compile,
            fuse_mlp=fuse_mlp)

    def before_test(self, runner) -> None:
        model = runner.model
        prepare_for_inference(
            model.module if is_model_wrapper(model) else model, **self.steps)
