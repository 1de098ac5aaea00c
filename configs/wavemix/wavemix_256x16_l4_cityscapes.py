# WaveMix-256/16, level 4 (63.2M parameters) on Cityscapes at full resolution
# (1024x2048), the recipe of Jeevan et al., arXiv 2205.14375, Sec. 4.2 and
# Appendix B: whole images, hflip only, batch 5 (1 GPU x 5 images), softmax
# focal loss (gamma 2), AdamW then SGD for the final 50 epochs, AMP on GPU.
#
# Differences from the authors' training script (documented in README):
# 19 classes with ignore index 255 (the script trained void as a 20th class),
# and the focal loss is per pixel (the script applied it to the batch-mean
# cross-entropy).
_base_ = [
    '../_base_/models/wavemix.py', '../_base_/datasets/cityscapes_wavemix.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/wavemix_adamw_sgd_150e.py'
]
model = dict(
    decode_head=dict(
        loss_decode=dict(
            _delete_=True, type='SoftmaxFocalLoss', gamma=2.0,
            loss_weight=1.0)))
