# UPerNet (UPerHead + FCN auxiliary head) on WTConvNeXt-T: mmseg's
# upernet_convnext.py with the ConvNeXt swapped for its WTConv version, as
# the WTConv authors' semantic segmentation code. Stage outputs at strides
# 4/8/16/32 with the arch's channels (T and S: 96/192/384/768).
#
# ImageNet weights: set the backbone's
#   init_cfg=dict(type='Pretrained', checkpoint=CKPT, prefix='backbone.')
# to a checkpoint in this module layout (the authors' mmseg-translated
# weights load as they are; their fixed wavelet filters are dropped).
_base_ = 'mmseg::_base_/models/upernet_convnext.py'
custom_imports = dict(imports=['mmseg_wavemix'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='WTConvNeXt',
        arch='tiny',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        # Fine-tuning value of ConvNeXt's segmentation recipe (1e-6 for
        # training from scratch).
        layer_scale_init_value=1.0,
        gap_before_final_norm=False),
    decode_head=dict(in_channels=[96, 192, 384, 768], in_index=[0, 1, 2, 3]),
    auxiliary_head=dict(in_channels=384, in_index=2))
