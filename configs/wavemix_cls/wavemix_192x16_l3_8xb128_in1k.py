# WaveMix-192/16, level 3, patchify stem (27.9M parameters), ImageNet-1k at
# 224x224 with timm's default recipe for 300 epochs (see the schedule file),
# 8 GPUs x 128 images.
_base_ = [
    '../_base_/models/wavemix_cls.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/wavemix_timm_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    head=dict(
        loss=dict(
            _delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1,
            loss_weight=1.0),
        topk=(1, 5)))
# timm's default train augmentation: random resized crop, flip, colour jitter
# 0.4; evaluation at crop_pct 0.875 (resize 256, centre crop 224).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
