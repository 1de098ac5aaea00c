# SVT-L on ImageNet-1k: the S recipe with drop path 0.3 and gradients
# clipped to norm 1 (the authors' svt_l config); they report 85.7% top-1
# (with token labelling, left out here).
_base_ = './svt-s_8xb128_in1k.py'
model = dict(
    backbone=dict(arch='l', drop_path_rate=0.3),
    head=dict(in_channels=512, num_heads=16))
optim_wrapper = dict(clip_grad=dict(max_norm=1.0))
