# UPerNet (UPerHead + FCN auxiliary head) on Wave-ViT-S, the Wave-ViT
# authors' segmentation model: mmseg's upernet_r50.py (the same heads) with
# the ResNet swapped for Wave-ViT. Stage outputs at strides 4/8/16/32, each
# normalised by its stage's LayerNorm (S: 64/128/320/448 channels).
#
# ImageNet weights: convert the authors' checkpoint with
# tools/convert_wavevit_weights.py and set the backbone's
#   init_cfg=dict(type='Pretrained', checkpoint=CKPT, prefix='backbone.')
_base_ = 'mmseg::_base_/models/upernet_r50.py'
custom_imports = dict(imports=['mmseg_wavemix'], allow_failed_imports=False)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='WaveViT',
        arch='s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        # the authors freeze the backbone's BatchNorm parameters (stem and
        # wavelet attention); their statistics still update
        norm_cfg=dict(type='BN', requires_grad=False)),
    decode_head=dict(in_channels=[64, 128, 320, 448], in_index=[0, 1, 2, 3]),
    auxiliary_head=dict(in_channels=320, in_index=2))
