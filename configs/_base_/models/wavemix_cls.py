# WaveMix for image classification through mmpretrain (the same WaveMix
# backbone as segmentation): WaveMix-192/16, level 3, with the patchify stem
# of the paper (Appendix C.3), global average pooling and a linear head, as
# the authors' wavemix.classification.WaveMix (dropout 0.5 is its default).
custom_imports = dict(
    imports=['mmseg_wavemix.classification'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='WaveMix',
        arch='192x16-l3',
        mlp_ratio=2,
        dropout=0.5,
        stem_type='patchify',
        patch_size=4,
        norm_cfg=dict(type='BN', requires_grad=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
