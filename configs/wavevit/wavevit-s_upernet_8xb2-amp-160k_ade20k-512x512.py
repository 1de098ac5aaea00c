# UPerNet + Wave-ViT-S on ADE20K, the authors' recipe: 512x512 crops, 8 GPUs
# x 2 images, 160k iterations, AdamW 6e-5 (see the schedule), drop path 0.1;
# they report 49.6 mIoU (single scale).
_base_ = [
    '../_base_/models/upernet_wavevit.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/wavevit_adamw_160k.py'
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
