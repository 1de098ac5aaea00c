# WaveMix-256/16, level 3 (49.6M parameters), paper Table 6; recipe of
# wavemix_256x16_l4_cityscapes.py (1024x2048, batch 5 = 1 GPU x 5 images).
_base_ = './wavemix_256x16_l4_cityscapes.py'
model = dict(backbone=dict(arch='256x16-l3'))
