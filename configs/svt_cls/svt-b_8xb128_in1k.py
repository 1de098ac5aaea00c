# SVT-B on ImageNet-1k: the S recipe (drop path 0.1); the authors report
# 85.2% top-1 (with token labelling, left out here).
_base_ = './svt-s_8xb128_in1k.py'
model = dict(
    backbone=dict(arch='b'), head=dict(in_channels=512, num_heads=16))
