# Wave-ViT-B on ImageNet-1k at 224x224, 8 GPUs x 128 images, the authors'
# schedule (see the schedule file) with drop path 0.1; they report 84.8% top-1
# (trained with token labelling, which these configs leave out).
_base_ = [
    '../_base_/models/wavevit_cls.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/wavevit_adamw_310e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(arch='b', drop_path_rate=0.1),
    head=dict(in_channels=512, num_heads=16))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
