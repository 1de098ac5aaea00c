# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
from mmengine.config import Config

from mmseg_wavemix.utils.checks import check_crop_size
from mmseg_wavemix.utils.cli import read_config

from .conftest import REPO_ROOT, logged_messages

UPERNET = (f'{REPO_ROOT}/configs/wavemix_decoders/'
           'upernet_wavemix-256x16-l4_4xb2-80k_cityscapes-512x1024.py')


def crop_warnings(cfg):
    with logged_messages() as messages:
        check_crop_size(cfg)
    return [m for m in messages if m.startswith('crop_size')]


@pytest.mark.parametrize('config', [
    UPERNET, f'{REPO_ROOT}/configs/wavemix/wavemix_256x16_l4_cityscapes.py',
    'mmseg::deeplabv3plus/deeplabv3plus_r101-d8_4xb2-80k_cityscapes-769x769.py'
])
def test_configs_whose_crop_size_is_their_crop_pass(config):
    assert crop_warnings(read_config(config)) == []


def test_a_crop_size_that_reaches_nothing_is_named(tmp_path):
    """A child config's crop_size does not reach its base's pipeline and
    data preprocessor, which read the base's own when it was parsed."""
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = '{UPERNET}'\ncrop_size = (769, 769)\n")
    warning, = crop_warnings(Config.fromfile(child))
    assert warning.startswith(
        "crop_size = (769, 769), but train_dataloader's RandomCrop crops "
        '(512, 1024) and model.data_preprocessor pads to (512, 1024): a '
        'config variable reaches only what its own file defines')
