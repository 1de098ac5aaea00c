# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the Wave-ViT authors' weights (github YehLi/ImageNetModel) to an
mmseg / mmpretrain checkpoint.

Example:
    python tools/convert_wavevit_weights.py wavevit_s.pth.tar \
        checkpoints/wavevit-s_in1k_backbone.pth
    # then, in an mmseg config:
    #   backbone=dict(init_cfg=dict(type='Pretrained',
    #       checkpoint='checkpoints/wavevit-s_in1k_backbone.pth',
    #       prefix='backbone.'))
    python tools/convert_wavevit_weights.py wavevit_s.pth.tar \
        checkpoints/wavevit-s_in1k.pth --with-head   # mmpretrain classifier

The source is their checkpoint (``{'state_dict': ...}`` or a bare state
dict; ``module.`` prefixes allowed), ImageNet or segmentation.
"""
import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.utils import wavevit_convert
from mmseg_wavemix.utils.cli import convert_weights_main


def main(argv=None):
    convert_weights_main(
        wavevit_convert, 'Wave-ViT',
        'WaveViT(final_norm=False) and WaveViTClsHead '
        '(configs/wavevit_cls)', argv)


if __name__ == '__main__':
    main()
