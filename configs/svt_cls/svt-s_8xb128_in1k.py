# SVT-S (ScatteringViT) on ImageNet-1k at 224x224: the authors' recipe is
# Wave-ViT's (their main.py: 8 GPUs x 128 images, 310 epochs, AdamW 5e-4 per
# 512 images, Mixup/CutMix, label smoothing), drop path 0.1, and the same
# class-attention head. They report 84.2% top-1, trained with token
# labelling, which these configs leave out (see the Wave-ViT base config).
_base_ = '../wavevit_cls/wavevit-s_8xb128_in1k.py'
model = dict(backbone=dict(type='ScatteringViT', arch='s', img_size=224))
