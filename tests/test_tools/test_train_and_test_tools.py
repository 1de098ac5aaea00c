# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/train.py, --resume and tools/test.py on CPU, as a user runs them."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from mmseg_wavemix.compat import mmengine_checkpoint_loading

from .demo_data import (MAIN_CONFIG, data_root_options, make_cityscapes,
                        run_tool)

TINY = {
    'model.backbone.embed_dims': 16,
    'model.backbone.depth': 1,
    'model.backbone.level': 2,
    'model.decode_head.in_channels': 16,
    'model.decode_head.channels': 4,
}
TINY_MODEL = [f'{key}={value}' for key, value in TINY.items()]


@pytest.fixture(scope='module')
def small_cityscapes(tmp_path_factory):
    return make_cityscapes(
        tmp_path_factory.mktemp('cityscapes'), 4, 2, height=128, width=256)


def train_options(root, max_iters):
    return TINY_MODEL + data_root_options(root) + [
        'train_dataloader.batch_size=2', f'train_cfg.max_iters={max_iters}',
        'train_cfg.val_interval=4',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'custom_hooks.0.final_iters=1'
    ]


def test_train_resume_and_test(small_cityscapes, tmp_path):
    work_dir = tmp_path / 'work_dir'
    first = run_tool('train.py', MAIN_CONFIG, '--work-dir', work_dir, '--amp',
                     '--cfg-options', *train_options(small_cityscapes, 4))
    # --amp (and the AMP recipe) fall back to fp32 on a CPU machine
    assert 'training in fp32' in first.stderr
    # the recipe's learning rates are for the paper's batch of 5
    assert 'The learning rates are for a total batch of 5 (auto_scale_lr.' \
        'base_batch_size); this run trains on 2 (1 process(es) x 2) with ' \
        'them unscaled; --auto-scale-lr scales them by 2/5' in \
        first.stdout + first.stderr
    assert (work_dir / 'iter_4.pth').exists()
    assert 'mIoU' in first.stdout + first.stderr
    # the recipe trains with CUDA graphs (nothing on CPU) and pins its
    # batches, which a machine without CUDA does not (PyTorch would warn)
    assert re.search(r"dict\(\s*cuda_graphs=True,\s*type='FastTrainingHook'"
                     r'\)', first.stdout)
    assert 'pin_memory=False' in first.stdout
    assert 'pin_memory=True' not in first.stdout
    assert "'pin_memory' argument is set as true" not in first.stderr

    # A longer schedule resumes from the last checkpoint, not from scratch;
    # --no-cuda-graphs turns the graphs of the config's FastTrainingHook off
    resumed = run_tool('train.py', MAIN_CONFIG, '--work-dir', work_dir,
                       '--resume', '--no-cuda-graphs', '--cfg-options',
                       *train_options(small_cityscapes, 6))
    log = resumed.stdout + resumed.stderr
    assert re.search(r"dict\(\s*cuda_graphs=False,\s*type='FastTrainingHook'"
                     r'\)', log)
    assert 'Load checkpoint from' in log and 'iter_4.pth' in log
    assert 'The learning rates are for' not in log  # the checkpoint's
    assert 'Iter(train) [1/6]' not in log
    assert 'Iter(train) [5/6]' in log
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(work_dir / 'iter_6.pth')
    assert checkpoint['meta']['iter'] == 6
    assert type(checkpoint['optimizer']['state']) is dict

    # --auto-scale-lr: AdamW's 1e-3 for 5 images, at 2 (mmengine's), and
    # SGD's after the switch (the hook's; here at once)
    scaled = run_tool('train.py', MAIN_CONFIG, '--work-dir',
                      tmp_path / 'scaled', '--auto-scale-lr',
                      '--cfg-options', *train_options(small_cityscapes, 1))
    log = scaled.stdout + scaled.stderr
    assert 'Scaling the original LR by 0.4' in log
    assert 'lr: 4.0000e-04' in log and 'The learning rates are' not in log
    assert 'switched the optimizer from AdamW to SGD at iteration 0 ' \
        '(learning rate scaled by 0.4, auto_scale_lr)' in log

    show_dir = tmp_path / 'vis'
    tested = run_tool('test.py', MAIN_CONFIG, work_dir / 'iter_6.pth',
                      '--work-dir', tmp_path / 'test_dir', '--show-dir',
                      show_dir, '--cfg-options', *TINY_MODEL,
                      *data_root_options(small_cityscapes))
    log = tested.stdout + tested.stderr
    assert 'mIoU' in log and 'per class results' in log
    overlays = glob.glob(osp.join(tmp_path, 'test_dir', '*', 'vis', '**',
                                  '*.png'), recursive=True) + glob.glob(
                                      osp.join(show_dir, '**', '*.png'),
                                      recursive=True)
    assert len(overlays) == 2  # one prediction overlay per val image

    # --fast (folded norms, channels_last) scores the same.
    fast = run_tool('test.py', MAIN_CONFIG, work_dir / 'iter_6.pth',
                    '--work-dir', tmp_path / 'fast_dir', '--fast',
                    '--cfg-options', *TINY_MODEL,
                    *data_root_options(small_cityscapes))
    fast_log = fast.stdout + fast.stderr
    miou = [float(re.findall(r'mIoU: ([\d.]+)', text)[-1])
            for text in (log, fast_log)]
    assert miou[1] == pytest.approx(miou[0], abs=0.05)

    # --amp: mmengine's mixed-precision test loop (bfloat16 on CPU)
    amp = run_tool('test.py', MAIN_CONFIG, work_dir / 'iter_6.pth',
                   '--work-dir', tmp_path / 'amp_dir', '--fast', '--amp',
                   '--cfg-options', *TINY_MODEL,
                   *data_root_options(small_cityscapes))
    amp_log = amp.stdout + amp.stderr
    assert re.search(r"test_cfg = dict\(.*fp16=True", amp_log)
    amp_miou = float(re.findall(r'mIoU: ([\d.]+)', amp_log)[-1])
    assert amp_miou == pytest.approx(miou[0], abs=1.0)

    # --tta: mmseg's test-time augmentation of the config's base (6 scales,
    # flips) through mmseg's SegTTAModel around ours
    tta = run_tool('test.py', MAIN_CONFIG, work_dir / 'iter_6.pth',
                   '--work-dir', tmp_path / 'tta_dir', '--tta',
                   '--cfg-options', *TINY_MODEL,
                   *data_root_options(small_cityscapes))
    tta_log = tta.stdout + tta.stderr
    assert re.search(r"^model = dict\(\n(    .*\n)*    type='SegTTAModel'\)$",
                     tta_log, re.MULTILINE)
    assert re.search(r'Iter\(test\) \[2/2\].*mIoU: [\d.]+', tta_log)

    # A user's own image through mmseg's inferencer, as the README shows.
    from mmseg.apis import MMSegInferencer
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.merge_from_dict(TINY)
    with mmengine_checkpoint_loading():  # a training checkpoint, torch 2.6+
        inferencer = MMSegInferencer(
            model=cfg, weights=str(work_dir / 'iter_6.pth'), device='cpu')
    image = next(small_cityscapes.rglob('*_leftImg8bit.png'))
    result = inferencer(str(image), out_dir=str(tmp_path / 'inferencer'))
    assert result['predictions'].shape == (128, 256)
    assert (tmp_path / 'inferencer' / 'vis' / image.name).exists()
