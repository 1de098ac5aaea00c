# Wave-ViT-S for ImageNet classification through mmpretrain, the authors'
# classifier: the backbone without its last norm, and their head (a
# class-attention block, the last stage's norm, a classifier plus half the
# maximum of the token-labelling classifier). DeiT-style Mixup/CutMix and
# label smoothing, as mmpretrain's Swin recipe; the authors' token labelling
# (per-token targets from a teacher) is left out.
custom_imports = dict(
    imports=['mmseg_wavemix.classification'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='WaveViT',
        arch='s',
        out_indices=-1,
        final_norm=False,
        drop_path_rate=0.1),
    head=dict(
        type='WaveViTClsHead',
        num_classes=1000,
        in_channels=448,
        num_heads=14,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))
