# WaveMix-Lite-256/16 (level 1, 22.2M parameters), paper Table 6; recipe of
# wavemix_256x16_l4_cityscapes.py (1024x2048, batch 5 = 1 GPU x 5 images).
_base_ = './wavemix_256x16_l4_cityscapes.py'
model = dict(backbone=dict(arch='lite-256x16'))
