# WaveMix training schedule (paper Appendix B): AdamW (lr 1e-3, betas 0.9 /
# 0.999, eps 1e-8, weight decay 0.01), then SGD (lr 1e-3, momentum 0.9) for
# the final 50 epochs, constant learning rate, mixed precision on GPU.
# The paper does not state the total length; we train 150 epochs.
# One epoch of Cityscapes train (2975 images) at batch 5 is 595 iterations.
iters_per_epoch = 595
max_iters = 150 * iters_per_epoch
sgd_iters = 50 * iters_per_epoch
val_interval = 5 * iters_per_epoch

# tools/train.py runs AmpOptimWrapper in fp32 (with a warning) without CUDA.
# fused=True: PyTorch's fused optimizers (one kernel over all parameters);
# under AMP the loss scaler hands them its scale and overflow flag on the
# device, where for the others it reads the flag on the host each step.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
        weight_decay=0.01, fused=True),
    clip_grad=None)
param_scheduler = []  # constant learning rate
custom_hooks = [
    dict(
        type='OptimizerSwitchHook',
        optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, fused=True),
        final_iters=sgd_iters),
    dict(type='NonFiniteLossHook'),  # stop before saving NaN weights
    # CUDA: channels_last, 1x1 convs as GEMMs, and the training forward and
    # backward replayed as CUDA graphs (H200, tools/train.py at batch 5:
    # 0.165 s a step against 0.205 s eager; tools/train.py --no-cuda-graphs
    # trains eagerly). Nothing on CPU.
    dict(type='FastTrainingHook', cuda_graphs=True)
]

# FastResumeIterBasedTrainLoop: mmengine's IterBasedTrainLoop, but a resumed
# run moves the sampler past the trained batches instead of loading them.
train_cfg = dict(
    type='FastResumeIterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=val_interval,
        max_keep_ckpts=2,
        save_best='mIoU',
        rule='greater',
        # atomic writes: a kill while saving never leaves a truncated file
        backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# the total batch the learning rates are for: the paper's 5 (tools/train.py
# warns at another, and --auto-scale-lr scales them linearly)
auto_scale_lr = dict(enable=False, base_batch_size=5)
