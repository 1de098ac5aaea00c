# WaveMix-Lite-128/8 (level 1) with the patchify stem, ImageNet-1k, the
# recipe of wavemix_192x16_l3_8xb128_in1k.py.
_base_ = './wavemix_192x16_l3_8xb128_in1k.py'
model = dict(
    backbone=dict(arch='lite-128x8'),
    head=dict(in_channels=128))
