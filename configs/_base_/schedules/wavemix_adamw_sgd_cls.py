# The paper's schedule for the smaller classification datasets: AdamW (lr
# 1e-3, weight decay 0.01), then SGD (lr 1e-3, momentum 0.9) for the final
# epochs (OptimizerSwitchHook), constant learning rate. The paper gives no
# epoch counts; ours are set per config. Includes mmpretrain's runtime, whose
# checkpoint hook it changes to keep the best top-1 accuracy.
_base_ = ['mmpretrain::_base_/default_runtime.py']
max_epochs = 200
sgd_epochs = 50
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
        weight_decay=0.01))
param_scheduler = []
custom_hooks = [
    dict(
        type='OptimizerSwitchHook',
        optimizer=dict(type='SGD', lr=1e-3, momentum=0.9),
        final_epochs=sgd_epochs),
    dict(type='NonFiniteLossHook')  # stop before saving NaN weights
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', interval=5, max_keep_ckpts=2,
        save_best='accuracy/top1', rule='greater',
        backend_args=dict(backend='atomic_local')))
# the total batch the learning rates are for (tools/train.py warns at
# another, and --auto-scale-lr scales them linearly)
auto_scale_lr = dict(enable=False, base_batch_size=128)
