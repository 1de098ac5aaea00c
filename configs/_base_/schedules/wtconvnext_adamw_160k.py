# The WTConv authors' segmentation schedule (mmseg's ConvNeXt one): AdamW,
# lr 1e-4, weight decay 0.05, learning rates decayed by 0.9 per backbone
# stage from the head down (mmseg's LearningRateDecayOptimizerConstructor,
# 'stage_wise'; num_layers 6 for T, 12 for S/B), 1500 warm-up iterations,
# then linear decay to 0 at 160k; mixed precision (falls back to fp32 with a
# warning where AMP is unavailable, e.g. on CPU).
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6),
    constructor='LearningRateDecayOptimizerConstructor',
    loss_scale='dynamic')
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        begin=1500,
        end=160000,
        eta_min=0.0,
        by_epoch=False)
]
# resumes by moving the sampler past the trained batches, not loading them
train_cfg = dict(type='FastResumeIterBasedTrainLoop')
# the total batch the learning rate is for: 8 GPUs x 2 (tools/train.py warns
# at another, and --auto-scale-lr scales it linearly)
auto_scale_lr = dict(enable=False, base_batch_size=16)
