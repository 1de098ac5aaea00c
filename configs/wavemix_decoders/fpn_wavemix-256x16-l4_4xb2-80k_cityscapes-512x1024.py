# Semantic FPN (FPN neck + FPNHead) on a WaveMix-256/16 pyramid, mmseg's
# Cityscapes 512x1024 crop recipe and 80k schedule, as
# fpn_r50_4xb2-80k_cityscapes-512x1024.py.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
    '../_base_/models/wavemix_pyramid.py'
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone={{_base_.wavemix_pyramid}},
    neck=dict(in_channels=[256, 256, 256, 256]))
# resumes by moving the sampler past the trained batches, not loading them
train_cfg = dict(type='FastResumeIterBasedTrainLoop')
auto_scale_lr = dict(enable=False, base_batch_size=8)  # 4 GPUs x 2
