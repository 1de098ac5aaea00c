# Wave-ViT-B on ImageNet-1k: the S recipe (drop path 0.1); the authors report
# 84.8% top-1 (trained with token labelling, which these configs leave out).
_base_ = './wavevit-s_8xb128_in1k.py'
model = dict(
    backbone=dict(arch='b'), head=dict(in_channels=512, num_heads=16))
