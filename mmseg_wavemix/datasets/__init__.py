# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .seeded_samples import SeededSampleDataset
from .transforms import PackSegInputsUint8

__all__ = ['PackSegInputsUint8', 'SeededSampleDataset']
