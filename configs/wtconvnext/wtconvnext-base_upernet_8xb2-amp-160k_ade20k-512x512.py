# WTConvNeXt-B (channels 128/256/512/1024, depths 3/3/27/3) in the ADE20K
# recipe of the tiny model, with 12 decay layers.
_base_ = './wtconvnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='base'),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
