# UPerNet + Wave-ViT-B on ADE20K, the authors' recipe (as S, drop path 0.3);
# they report 51.5 mIoU (single scale).
_base_ = './wavevit-s_upernet_8xb2-amp-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='b', drop_path_rate=0.3),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
