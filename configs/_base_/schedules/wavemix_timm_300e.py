# The paper trained ImageNet with timm's train.py defaults for 300 epochs.
# Mapped onto mmengine/mmpretrain: SGD (momentum 0.9) at timm's base lr of
# 0.1 per 256 images, here for the configs' 8 x 128 = 1024 (tools/train.py
# --auto-scale-lr scales it to the run's total batch, as timm does), weight
# decay 2e-5, 5 linear warm-up epochs from 1e-5, cosine decay to 0, label
# smoothing 0.1 (set in the configs' heads).
# Not reproduced: timm's per-iteration warm-up granularity and its EMA
# (off by default in timm too).
lr = 0.1 * 1024 / 256
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=2e-5))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-5 / lr,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, by_epoch=True, begin=5, end=300)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# the total batch that lr is for (tools/train.py --auto-scale-lr)
auto_scale_lr = dict(base_batch_size=1024)
