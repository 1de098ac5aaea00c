# UPerNet + SVT-S (ScatteringViT) on ADE20K 512x512: our extension (the SVT
# authors publish no segmentation code): the Wave-ViT authors' UPerNet
# recipe (8 GPUs x 2 images, 160k iterations, AdamW 6e-5, drop path 0.1,
# frozen stem BatchNorm parameters) with SVT-S, its low-pass filters sized
# for 512x512 (ImageNet weights at 224 are resized when loaded).
_base_ = '../wavevit/wavevit-s_upernet_8xb2-amp-160k_ade20k-512x512.py'
crop_size = (512, 512)
model = dict(
    backbone=dict(type='ScatteringViT', arch='s', img_size=crop_size))
