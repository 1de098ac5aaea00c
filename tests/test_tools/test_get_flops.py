# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os.path as osp

from ..conftest import REPO_ROOT
from .demo_data import run_tool


def test_get_flops_segmentation_and_classification():
    configs = [
        osp.join(REPO_ROOT, 'configs', 'wavemix',
                 'wavemix_16x2_l4_cityscapes-demo.py'),
        osp.join(REPO_ROOT, 'configs', 'wavemix_cls',
                 'wavemix_64x4_l2_1xb64_digits.py'),
    ]
    result = run_tool('analysis_tools/get_flops.py', *configs, '--shape', 64,
                      64, '--markdown')
    rows = [line for line in result.stdout.splitlines()
            if line.startswith('| `')]
    assert len(rows) == 2
    assert 'wavemix_16x2_l4_cityscapes-demo.py` | 0.0M |' in rows[0]
    assert 'wavemix_64x4_l2_1xb64_digits.py` | 0.6M |' in rows[1]
