# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch

from mmseg_wavemix.compat import mmengine_checkpoint_loading, resolve_amp

from .test_engine.toy_runner import build_toy_runner


class NotAllowed:
    """A class the weights-only unpickler must keep rejecting."""


def test_mmengine_checkpoints_load_weights_only(tmp_path):
    runner = build_toy_runner(tmp_path, max_iters=2, final_iters=0)
    runner.train()
    checkpoint_file = osp.join(tmp_path, 'iter_2.pth')
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(checkpoint_file)  # weights_only=True
    assert checkpoint['meta']['iter'] == 2
    assert 'message_hub' in checkpoint and 'optimizer' in checkpoint


def test_other_pickled_objects_stay_rejected(tmp_path):
    path = osp.join(tmp_path, 'evil.pth')
    torch.save({'x': NotAllowed()}, path)
    with mmengine_checkpoint_loading():
        with pytest.raises(pickle.UnpicklingError, match='NotAllowed'):
            torch.load(path)


def test_amp_falls_back_to_fp32_without_cuda(monkeypatch):
    import mmengine.device as device
    for name in ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
                 'is_musa_available'):
        monkeypatch.setattr(device, name, lambda: False)
    amp = dict(type='AmpOptimWrapper', loss_scale='dynamic',
               optimizer=dict(type='AdamW', lr=1e-3), clip_grad=None)
    with pytest.warns(UserWarning, match='training in fp32'):
        fp32 = resolve_amp(amp)
    assert fp32 == dict(type='OptimWrapper',
                        optimizer=dict(type='AdamW', lr=1e-3), clip_grad=None)
    plain = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    assert resolve_amp(plain) is plain


def test_amp_kept_with_cuda(monkeypatch):
    import mmengine.device as device
    monkeypatch.setattr(device, 'is_cuda_available', lambda: True)
    amp = dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    assert resolve_amp(amp) is amp


def test_mmpretrain_models_import_after_the_plugin():
    code = ('import mmseg_wavemix.classification, mmpretrain.models; '
            'from mmpretrain.registry import MODELS; '
            "print(MODELS.get('ImageClassifier').__name__)")
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith('ImageClassifier')
