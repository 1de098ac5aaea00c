# WaveMix-Lite-128/7 (level 1, 2.4M parameters) on CIFAR-10: strided stem
# with stride 1 (blocks at 32x32), AdamW then SGD for the final 50 epochs
# (the paper's schedule for these datasets; 200 epochs is our choice),
# mmpretrain's CIFAR augmentation (random crop with padding 4, flip).
_base_ = [
    '../_base_/models/wavemix_cls.py',
    'mmpretrain::_base_/datasets/cifar10_bs16.py',
    '../_base_/schedules/wavemix_adamw_sgd_cls.py'
]
model = dict(
    backbone=dict(
        arch='lite-128x7', stem_type='strided', stem_stride=1),
    head=dict(num_classes=10, in_channels=128))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
