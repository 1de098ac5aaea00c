# The Wave-ViT authors' ImageNet schedule: AdamW with lr 5e-4 per 512 images
# (here for the configs' 8 x 128 = 1024; tools/train.py --auto-scale-lr
# scales it to the run's total batch, as their code does), weight decay 0.05
# (none on norms and biases), 5 linear warm-up epochs, cosine decay, 310
# epochs.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=5e-4 * 1024 / 512,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5,
        end=310)
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
