# WaveMix-256/16, level 4 (Jeevan et al., arXiv 2205.14375, Table 6) with the
# paper's decoder: two transposed convolutions and a 1x1 classifier.
custom_imports = dict(imports=['mmseg_wavemix'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessorUint8',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    # Batches are padded to a multiple of 64 (stem stride 2 x 2 x 2^4 levels):
    # no padding for Cityscapes at 1024x2048 or 512x1024.
    size_divisor=64,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='WaveMix',
        arch='256x16-l4',  # D=256, 16 blocks, 4 levels (WaveMix.arch_settings)
        in_channels=3,
        mlp_ratio=2,
        ff_channels=None,  # = embed_dims, as in all of the paper's models
        dropout=0.,
        stem_stride=2,
        out_indices=(-1, ),  # the last block
        norm_cfg=norm_cfg,
        with_cp=False,
        # level MLPs that recompute their hidden layers in backward and do
        # not keep the last BN's input (recovered in fp32); under AMP each
        # keeps only its input (docs/performance.md); not with with_cp
        memory_efficient=True),
    decode_head=dict(
        type='WaveMixHead',
        in_channels=256,
        channels=64,  # embed_dims / 4
        num_classes=19,
        dropout_ratio=0.,  # the paper has no dropout before the classifier
        # last upsampling + conv_seg run as one transposed convolution (same
        # parameters and gradients; 3.5x fewer FLOPs there for 19 classes)
        fold_classifier=True,
        # keeps its input, not the last upsampling's (recomputed in backward)
        memory_efficient=True,
        norm_cfg=None,
        act_cfg=None,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
