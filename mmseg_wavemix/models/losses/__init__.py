# Copyright (c) mmseg_wavemix contributors. All rights reserved.
from .softmax_focal_loss import SoftmaxFocalLoss

__all__ = ['SoftmaxFocalLoss']
