# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Save the weights of the trained demo model as a small test fixture.

The reduced-precision tests (bf16/fp16 argmax agreement with fp32) need a
trained model: a random one has near-uniform logits, so any rounding flips
its argmax. Train it with the demo, then save its weights::

    bash tools/run_demo.sh
    .venv/bin/python tests/data/make_trained_demo_fixture.py \
        work_dirs/wavemix_16x2_l4_cityscapes-demo/best_mIoU_iter_*.pth

It writes ``tests/data/wavemix_demo_trained.pth`` (weights of
``configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py``, about 150 KB).
"""
import argparse
import os.path as osp

import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading

OUT = osp.join(osp.dirname(osp.abspath(__file__)), 'wavemix_demo_trained.pth')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='training checkpoint of the demo')
    args = parser.parse_args()
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(args.checkpoint, map_location='cpu')
    torch.save(
        dict(
            config='configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py',
            source=osp.basename(args.checkpoint),
            state_dict=checkpoint['state_dict']), OUT)
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
