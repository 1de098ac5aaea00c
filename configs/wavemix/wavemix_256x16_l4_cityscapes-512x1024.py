# WaveMix-256/16, level 4 at half resolution: images resized to 512x1024 for
# training and inference (predictions are resized back and scored against
# the full-resolution labels). Otherwise the recipe of
# wavemix_256x16_l4_cityscapes.py (batch 5 = 1 GPU x 5 images).
_base_ = './wavemix_256x16_l4_cityscapes.py'
scale = (1024, 512)  # (w, h) as mmcv's Resize takes it
crop_size = (512, 1024)  # the training input: whole resized images
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputsUint8')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    # labels are loaded after Resize: scored at full resolution
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputsUint8')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
