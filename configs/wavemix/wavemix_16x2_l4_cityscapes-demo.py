# A 16-channel, 2-block WaveMix (level 4) trained for a few minutes on CPU on
# the generated Cityscapes-format demo data (tools/run_demo.sh). Same recipe
# as wavemix_256x16_l4_cityscapes.py (full 1024x2048 images, hflip, focal
# loss, AdamW then SGD), with a tiny model, batch 1 and a short schedule.
_base_ = './wavemix_256x16_l4_cityscapes.py'
data_root = 'data/cityscapes_demo/'
model = dict(
    backbone=dict(embed_dims=16, depth=2),
    decode_head=dict(in_channels=16, channels=4))
train_dataloader = dict(
    batch_size=1, num_workers=2, dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=2, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_iters = 160
# A tiny model trains faster with AdamW at 1e-2; SGD keeps the recipe's 1e-3.
optim_wrapper = dict(optimizer=dict(lr=0.01))
custom_hooks = [
    dict(
        type='OptimizerSwitchHook',
        optimizer=dict(type='SGD', lr=1e-3, momentum=0.9),
        final_iters=40),
    dict(type='NonFiniteLossHook'),
    dict(type='FastTrainingHook')
]
randomness = dict(seed=0)
train_cfg = dict(max_iters=max_iters, val_interval=80)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=80))
auto_scale_lr = dict(base_batch_size=1)  # its learning rates' batch
