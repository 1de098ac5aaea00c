# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import numpy as np
import torch
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackSegInputsUint8(PackSegInputs):
    """mmseg's ``PackSegInputs``, but a 2-D uint8 label map stays uint8.

    ``PackSegInputs`` makes every label map int64: eight bytes a pixel that
    each batch carries from the data loader's workers (through shared
    memory) and to the device. A Cityscapes batch of 5 images at 1024x2048
    has 84 MB of int64 labels against 31 MB of images; in uint8 the labels
    are 10.5 MB. ``SegDataPreProcessorUint8`` makes them int64 on the
    device, where the losses need them. Label maps of other types (16-bit
    PNGs, maps made by a transform) are packed as ``PackSegInputs`` packs
    them.

    Args:
        meta_keys (Sequence[str]): As in ``PackSegInputs``.
    """

    def transform(self, results: dict) -> dict:
        seg_map = results.get('gt_seg_map')
        if seg_map is None or seg_map.dtype != np.uint8 or seg_map.ndim != 2:
            return super().transform(results)
        packed = super().transform(
            {k: v for k, v in results.items() if k != 'gt_seg_map'})
        # contiguous: RandomFlip leaves a view with a negative stride
        packed['data_samples'].gt_sem_seg = PixelData(
            data=torch.from_numpy(np.ascontiguousarray(seg_map[None])))
        return packed
