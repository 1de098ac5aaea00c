# Wave-ViT-L on ImageNet-1k at 224x224, 8 GPUs x 128 images, the authors'
# schedule (see the schedule file) with drop path 0.3; they report 85.5% top-1
# (trained with token labelling, which these configs leave out).
_base_ = [
    '../_base_/models/wavevit_cls.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/wavevit_adamw_310e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(arch='l', drop_path_rate=0.3),
    head=dict(in_channels=512, num_heads=16))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
