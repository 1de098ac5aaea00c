# Cityscapes as trained by WaveMix (paper Sec. 4.2): whole 1024x2048 images,
# no crop or rescale, horizontal flip the only augmentation, single-scale
# whole-image inference. 19 train classes, ignore index 255 (mmseg protocol).
# Label maps travel as uint8 (PackSegInputsUint8): 10.5 MB a batch of 5
# instead of 84 MB in int64; the model's SegDataPreProcessorUint8 makes them
# int64 on the device.
_base_ = ['mmseg::_base_/datasets/cityscapes.py']

data_root = 'data/cityscapes/'
# The training input: whole images, nothing is cropped (mmseg's base has
# 512x1024 crops). Nothing reads this; it replaces the base's, which would
# misstate the recipe in the printed config.
crop_size = (1024, 2048)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputsUint8')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputsUint8')
]
# Batch 5 as in the paper. batch_size is per GPU: 1 GPU x 5 images here; on
# N GPUs set train_dataloader.batch_size so that N x batch_size = 5 (or keep
# it and scale the learning rate).
# pin_memory: the batches in page-locked memory, which the model's data
# preprocessor copies to the GPU without the host waiting (its non_blocking);
# H200, tools/train.py at batch 5 with CUDA graphs: 0.154 s a step against
# 0.165 s. tools/train.py turns it off without CUDA.
train_dataloader = dict(
    batch_size=5,
    num_workers=4,
    pin_memory=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
# The official cityscapesscripts evaluation (and the test-server format) is
# mmseg's CityscapesMetric; use it in place of IoUMetric with
#   --cfg-options test_evaluator.type=CityscapesMetric \
#       test_evaluator.output_dir=work_dirs/cityscapes_results \
#       test_evaluator.keep_results=True
# (add test_evaluator.format_only=True for the test split, which has no labels:
# the label-ID PNGs for the evaluation server are then in output_dir).
