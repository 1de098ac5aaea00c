# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmseg_wavemix.models.decode_heads import WaveMixHead
from mmseg_wavemix.models.utils import fuse_norm_layers


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Prepare the model for fast testing once its weights are loaded: fold
    BatchNorm into the (transposed) convolutions before it, fold a
    :class:`WaveMixHead`'s classifier into its last transposed convolution
    (where nothing separates them and there are fewer classes than
    channels, so that it saves FLOPs; see
    :meth:`WaveMixHead.fuse_classifier`) and use channels_last memory, which
    oneDNN's CPU convolutions and cuDNN's tensor cores prefer. The logits are
    the same up to float rounding.

    It acts before testing only (``tools/test.py --fast`` adds it): folded
    norms cannot be trained, so validation during training is left alone.

    Args:
        fuse_norm (bool): Fold BatchNorm layers. Default: True.
        fuse_classifier (bool): Fold the WaveMixHead's classifier.
            Default: True.
        channels_last (bool): Convert the model to channels_last.
            Default: True.
    """

    priority = 'LOW'

    def __init__(self,
                 fuse_norm: bool = True,
                 fuse_classifier: bool = True,
                 channels_last: bool = True):
        self.fuse_norm = fuse_norm
        self.fuse_classifier = fuse_classifier
        self.channels_last = channels_last

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.eval()
        if self.fuse_norm:
            fuse_norm_layers(model)
        head = getattr(model, 'decode_head', None)
        if self.fuse_classifier and isinstance(head, WaveMixHead) and \
                head.can_fuse_classifier and head.num_classes < head.channels:
            head.fuse_classifier()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
