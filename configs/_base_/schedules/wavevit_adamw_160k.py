# The Wave-ViT authors' segmentation schedule: AdamW, lr 6e-5, weight decay
# 0.01 (none on norms), 1500 linear warm-up iterations from 1e-6 of the lr,
# then poly (power 1) decay to 0 at 160k; fp16 with a static loss scale of
# 512 (falls back to fp32 with a warning where AMP is unavailable, e.g. on
# CPU).
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
    loss_scale=512.)
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
