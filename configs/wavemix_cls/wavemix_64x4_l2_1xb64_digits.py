# A small WaveMix (64 channels, 4 blocks, level 2) on scikit-learn's
# handwritten digits (1,797 real 8x8 images, 10 classes), prepared by
#   python tools/dataset_converters/sklearn_digits.py data/digits
# into mmpretrain's CustomDataset folders. Trains on 2 CPU cores in 81 s:
# AdamW then SGD for the last 5 epochs. Images are upsampled to 32x32 and the
# strided stem brings them back to 8x8 for the blocks.
_base_ = [
    '../_base_/models/wavemix_cls.py',
    '../_base_/schedules/wavemix_adamw_sgd_cls.py'
]
data_root = 'data/digits'
model = dict(
    backbone=dict(
        embed_dims=64, depth=4, level=2, dropout=0., stem_type='strided',
        stem_stride=2),
    head=dict(num_classes=10, in_channels=64))
data_preprocessor = dict(
    num_classes=10, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline
# Images of 8x8 pixels load faster in the training process than in workers
# (2 cores: 30 epochs in 81 s without workers, 140 s with 2, same top-1).
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 30
custom_hooks = [
    dict(
        type='OptimizerSwitchHook',
        optimizer=dict(type='SGD', lr=1e-3, momentum=0.9),
        final_epochs=5),
    dict(type='NonFiniteLossHook')
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
default_hooks = dict(logger=dict(interval=10))
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=64)  # its learning rates' batch
