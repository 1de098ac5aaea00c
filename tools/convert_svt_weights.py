# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Convert the SVT authors' weights (github badripatro/svt) to an mmseg /
mmpretrain checkpoint for ``ScatteringViT``.

Example:
    python tools/convert_svt_weights.py svt_s.pth \
        checkpoints/svt-s_in1k_backbone.pth
    # then, in an mmseg config:
    #   backbone=dict(init_cfg=dict(type='Pretrained',
    #       checkpoint='checkpoints/svt-s_in1k_backbone.pth',
    #       prefix='backbone.'))
    # (a model with another img_size gets the low-pass filters resized)
    python tools/convert_svt_weights.py svt_s.pth \
        checkpoints/svt-s_in1k.pth --with-head   # mmpretrain classifier

The source is their checkpoint (``{'model': ...}`` as their main.py saves
it, ``{'state_dict': ...}`` or a bare state dict; ``module.`` prefixes
allowed). The DTCWT's fixed filters in it are dropped (ours are not
stored).
"""
import mmseg_wavemix  # noqa: F401
from mmseg_wavemix.models.utils import svt_convert
from mmseg_wavemix.utils.cli import convert_weights_main


def main(argv=None):
    convert_weights_main(
        svt_convert, 'SVT',
        'ScatteringViT(final_norm=False) and WaveViTClsHead '
        '(configs/svt_cls)', argv)


if __name__ == '__main__':
    main()
