# WaveMix-256/16, level 3 (49.6M parameters) at half resolution
# (512x1024); the recipe of wavemix_256x16_l4_cityscapes-512x1024.py.
_base_ = './wavemix_256x16_l4_cityscapes-512x1024.py'
model = dict(backbone=dict(arch='256x16-l3'))
