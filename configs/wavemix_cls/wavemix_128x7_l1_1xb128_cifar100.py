# WaveMix-Lite-128/7 (level 1) on CIFAR-100, the recipe of
# wavemix_128x7_l1_1xb128_cifar10.py.
_base_ = [
    '../_base_/models/wavemix_cls.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    '../_base_/schedules/wavemix_adamw_sgd_cls.py'
]
model = dict(
    backbone=dict(
        arch='lite-128x7', stem_type='strided', stem_stride=1),
    head=dict(num_classes=100, in_channels=128))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
