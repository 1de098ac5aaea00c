# WTConvNeXt-S (depths 3/3/27/3) in the ADE20K recipe of the tiny model, with
# the authors' drop path 0.3 and 12 decay layers.
_base_ = './wtconvnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
