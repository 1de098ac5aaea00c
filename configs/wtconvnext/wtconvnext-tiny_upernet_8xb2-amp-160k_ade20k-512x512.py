# UPerNet + WTConvNeXt-T on ADE20K, the WTConv authors' recipe: 512x512
# crops, 8 GPUs x 2 images, 160k iterations (AdamW with stage-wise lr decay,
# see the schedule), sliding-window test with 512x512 windows at stride 341.
_base_ = [
    '../_base_/models/upernet_wtconvnext.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/wtconvnext_adamw_160k.py'
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
