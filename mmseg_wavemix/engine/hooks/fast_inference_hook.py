# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmseg_wavemix.models.decode_heads import WaveMixHead
from mmseg_wavemix.models.utils import fuse_conv_gelu, fuse_norm_layers


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Prepare the model for fast testing once its weights are loaded.

    - BatchNorm is folded into the (transposed) convolution before it.
    - A :class:`WaveMixHead`'s classifier is folded into its last transposed
      convolution where nothing separates them and there are fewer classes
      than channels, so that it saves FLOPs (see
      :meth:`WaveMixHead.fuse_classifier`).
    - The GELU of each WaveMix level runs inside its first convolution on
      CPU (:class:`~mmseg_wavemix.models.utils.FusedConvGELU`).
    - The model uses channels_last memory, which oneDNN's CPU convolutions
      and cuDNN's tensor cores prefer.

    The logits are the same up to float rounding. It acts before testing
    only (``tools/test.py --fast`` adds it): folded layers cannot be trained,
    so validation during training is left alone.

    Args:
        fuse_norm (bool): Fold BatchNorm layers. Default: True.
        fuse_classifier (bool): Fold the WaveMixHead's classifier.
            Default: True.
        fuse_activation (bool): Fuse each WaveMix level's GELU into the
            convolution before it. Default: True.
        channels_last (bool): Convert the model to channels_last.
            Default: True.
    """

    priority = 'LOW'

    def __init__(self,
                 fuse_norm: bool = True,
                 fuse_classifier: bool = True,
                 fuse_activation: bool = True,
                 channels_last: bool = True):
        self.fuse_norm = fuse_norm
        self.fuse_classifier = fuse_classifier
        self.fuse_activation = fuse_activation
        self.channels_last = channels_last

    def prepare(self, model: nn.Module) -> nn.Module:
        """Apply the enabled steps to ``model`` (in place, in eval mode)."""
        model.eval()
        if self.fuse_norm:
            fuse_norm_layers(model)
        head = getattr(model, 'decode_head', None)
        if self.fuse_classifier and isinstance(head, WaveMixHead) and \
                head.classifier_fold_saves_flops:
            head.fuse_classifier()
        if self.fuse_activation:
            fuse_conv_gelu(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def before_test(self, runner) -> None:
        self.prepare(runner.model.module if is_model_wrapper(runner.model)
                     else runner.model)
