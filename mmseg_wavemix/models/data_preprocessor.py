# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from typing import Any, Dict

import torch
from mmseg.models import SegDataPreProcessor
from mmseg.registry import MODELS


@MODELS.register_module()
class SegDataPreProcessorUint8(SegDataPreProcessor):
    """mmseg's ``SegDataPreProcessor`` for batches whose label maps are
    uint8 (``PackSegInputsUint8``): they are copied to the device and
    padded as uint8, then made int64 there, as the losses and the decode
    heads expect. Labels of other integer types are made int64 too.

    Args:
        non_blocking (bool): Copy the batch to the device without the host
            waiting for the copy (and for the GPU work queued before it).
            It takes effect for memory the data loader pins
            (``pin_memory=True``, as the Cityscapes recipe's does); from
            pageable memory the copy is the plain one. mmengine's option
            (False there), which mmseg's preprocessor does not pass on.
            Defaults to True.
        **kwargs: ``SegDataPreProcessor``'s arguments.
    """

    def __init__(self, non_blocking: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._non_blocking = non_blocking

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        data = super().forward(data, training)
        for sample in data.get('data_samples') or ():
            labels = sample.get('gt_sem_seg')
            if labels is not None and labels.data.dtype != torch.int64:
                labels.data = labels.data.long()
        return data
