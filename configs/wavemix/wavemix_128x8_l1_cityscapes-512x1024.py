# WaveMix-Lite-128/8 (level 1, 2.9M parameters) at half resolution
# (512x1024); the recipe of wavemix_256x16_l4_cityscapes-512x1024.py.
_base_ = './wavemix_256x16_l4_cityscapes-512x1024.py'
model = dict(
    backbone=dict(arch='lite-128x8'),
    decode_head=dict(in_channels=128, channels=32))
