# WaveMix-Lite-128/8 (level 1, 2.9M parameters), paper Table 6; recipe of
# wavemix_256x16_l4_cityscapes.py (1024x2048, batch 5 = 1 GPU x 5 images).
_base_ = './wavemix_256x16_l4_cityscapes.py'
model = dict(
    backbone=dict(arch='lite-128x8'),
    decode_head=dict(in_channels=128, channels=32))
