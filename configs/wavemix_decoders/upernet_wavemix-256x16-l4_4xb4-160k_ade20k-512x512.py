# UPerNet on a WaveMix-256/16 pyramid for ADE20K (150 classes), mmseg's
# 512x512 crop recipe and 160k schedule, as
# upernet_r50_4xb4-160k_ade20k-512x512.py.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/models/wavemix_pyramid.py'
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone={{_base_.wavemix_pyramid}},
    decode_head=dict(
        in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3],
        num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))
train_dataloader = dict(batch_size=4)
# resumes by moving the sampler past the trained batches, not loading them
train_cfg = dict(type='FastResumeIterBasedTrainLoop')
auto_scale_lr = dict(enable=False, base_batch_size=16)  # 4 GPUs x 4
