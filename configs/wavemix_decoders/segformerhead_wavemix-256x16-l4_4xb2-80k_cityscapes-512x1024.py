# The SegFormer all-MLP head on a WaveMix-256/16 pyramid, mmseg's Cityscapes
# 512x1024 crop recipe and 80k schedule (the SegFormer configs train the
# whole model with AdamW lr 6e-5 for 160k: see segformer_mit-b0_8xb1-160k_
# cityscapes-1024x1024.py to match them).
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py',
    'mmseg::_base_/datasets/cityscapes.py',
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
    decode_head=dict(in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3]))
# resumes by moving the sampler past the trained batches, not loading them
train_cfg = dict(type='FastResumeIterBasedTrainLoop')
auto_scale_lr = dict(enable=False, base_batch_size=8)  # 4 GPUs x 2
