# UPerNet + WTConvNeXt-T on Cityscapes: the ADE20K optimizer (AdamW with
# stage-wise lr decay) on mmseg's Cityscapes 512x1024 crop recipe, 4 GPUs x 2
# images and 80k iterations, as mmseg's UPerNet Cityscapes configs; whole
# 1024x2048 images at test time.
_base_ = [
    '../_base_/models/upernet_wtconvnext.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/wtconvnext_adamw_160k.py'
]
crop_size = (512, 1024)
max_iters = 80000
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        begin=1500,
        end=max_iters,
        eta_min=0.0,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
auto_scale_lr = dict(enable=False, base_batch_size=8)  # 4 GPUs x 2
