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

    Args: as ``SegDataPreProcessor``'s.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        data = super().forward(data, training)
        for sample in data.get('data_samples') or ():
            labels = sample.get('gt_sem_seg')
            if labels is not None and labels.data.dtype != torch.int64:
                labels.data = labels.data.long()
        return data
