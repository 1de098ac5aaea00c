# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Label maps packed as uint8 (PackSegInputsUint8) reach the model as the
int64 maps mmseg packs (SegDataPreProcessorUint8), with 8x fewer bytes
between the data loader and the device."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.models import SegDataPreProcessor
from mmseg.structures import SegDataSample

from mmseg_wavemix.datasets import PackSegInputsUint8
from mmseg_wavemix.models import SegDataPreProcessorUint8
from mmseg_wavemix.utils.checks import InputError, check_label_packing
from mmseg_wavemix.utils.cli import build_model

from ..test_tools.demo_data import MAIN_CONFIG


def loaded(label_dtype=np.uint8, flipped=True):
    """What LoadAnnotations and RandomFlip leave for the packing."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    seg = rng.integers(0, 19, (6, 10)).astype(label_dtype)
    seg[0, :3] = 255
    if flipped:  # mmcv's imflip: views with a negative stride
        img, seg = img[:, ::-1], seg[:, ::-1]
    return dict(img=img, gt_seg_map=seg, img_shape=(6, 10), flip=flipped,
                img_path='a.png', seg_map_path='a_labelTrainIds.png')


@pytest.mark.parametrize('flipped', [True, False])
def test_pack_keeps_uint8_labels(flipped):
    ours = PackSegInputsUint8().transform(loaded(flipped=flipped))
    mmseg = PackSegInputs().transform(loaded(flipped=flipped))
    labels = ours['data_samples'].gt_sem_seg.data
    assert labels.dtype == torch.uint8 and labels.is_contiguous()
    assert mmseg['data_samples'].gt_sem_seg.data.dtype == torch.int64
    torch.testing.assert_close(labels.long(),
                               mmseg['data_samples'].gt_sem_seg.data)
    torch.testing.assert_close(ours['inputs'], mmseg['inputs'])
    assert ours['data_samples'].metainfo == mmseg['data_samples'].metainfo


@pytest.mark.parametrize('dtype', [np.uint16, np.int32, np.int64])
def test_pack_makes_other_labels_int64_as_mmseg(dtype):
    results = loaded(dtype)
    ours = PackSegInputsUint8().transform(results)
    assert results['gt_seg_map'].dtype == dtype  # the input is left alone
    mmseg = PackSegInputs().transform(loaded(dtype))
    assert ours['data_samples'].gt_sem_seg.data.dtype == torch.int64
    torch.testing.assert_close(ours['data_samples'].gt_sem_seg.data,
                               mmseg['data_samples'].gt_sem_seg.data)


def batch(label_dtype, sizes=((6, 10), (5, 9))):
    rng = np.random.default_rng(1)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(torch.from_numpy(
            rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        samples.append(SegDataSample(
            gt_sem_seg=PixelData(data=torch.from_numpy(
                rng.integers(0, 19, (1, h, w))).to(label_dtype)),
            metainfo=dict(img_shape=(h, w), ori_shape=(h, w))))
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('training', [True, False])
def test_preprocessor_gives_the_int64_labels_of_mmseg(training):
    # the batch is padded to 8x16 in training: labels with seg_pad_val
    options = dict(mean=[1., 2., 3.], std=[2., 3., 4.], bgr_to_rgb=True,
                   size_divisor=8, seg_pad_val=255)
    sizes = ((6, 10), (5, 9)) if training else ((6, 10), (6, 10))
    ours = SegDataPreProcessorUint8(**options)(
        batch(torch.uint8, sizes), training)
    mmseg = SegDataPreProcessor(**options)(batch(torch.int64, sizes),
                                           training)
    for a, b in zip(ours['data_samples'], mmseg['data_samples']):
        assert a.gt_sem_seg.data.dtype == torch.int64
        torch.testing.assert_close(a.gt_sem_seg.data, b.gt_sem_seg.data)
    if training:
        assert (ours['data_samples'][1].gt_sem_seg.data[:, 5:] == 255).all()
    torch.testing.assert_close(ours['inputs'], mmseg['inputs'])


@pytest.mark.parametrize('non_blocking', [False, True])
def test_preprocessor_copies_as_asked(non_blocking, monkeypatch):
    """mmseg's preprocessor drops mmengine's ``non_blocking``; ours passes
    it to every copy: the images' and the labels'."""
    data, copies = batch(torch.uint8), []
    to = torch.Tensor.to

    def recording_to(tensor, *args, **kwargs):
        copies.append(kwargs.get('non_blocking', False))
        return to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'to', recording_to)
    SegDataPreProcessorUint8(non_blocking=non_blocking, size_divisor=8)(
        data, True)
    assert copies[:4] == [non_blocking] * 4  # 2 images, then 2 label maps
    # the default: without waiting (for the recipe's pinned batches)
    data = batch(torch.uint8)
    copies.clear()
    SegDataPreProcessorUint8(size_divisor=8)(data, True)
    assert copies[:4] == [True] * 4


def test_decoders_with_mmseg_losses_train_on_uint8_labels():
    """mmseg's CrossEntropyLoss takes int64 labels only: the recipe's
    batches reach it through the preprocessor."""
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.merge_from_dict({
        'model.backbone.embed_dims': 16,
        'model.backbone.depth': 1,
        'model.decode_head.in_channels': 16,
        'model.decode_head.channels': 4,
    })
    cfg.model.decode_head.loss_decode = dict(type='CrossEntropyLoss')
    model = build_model(cfg)
    data = batch(torch.uint8, ((64, 128), (64, 128)))
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(losses['decode.loss_ce'])
    plain = data['data_samples'][0].gt_sem_seg.data.dtype
    cfg.model.data_preprocessor.type = 'SegDataPreProcessor'
    model = build_model(cfg)
    with pytest.raises(RuntimeError, match='Long|Byte'):
        model(**model.data_preprocessor(batch(torch.uint8, ((64, 128), ) * 2),
                                        True), mode='loss')
    assert plain == torch.uint8  # the preprocessor left the host's batch


def test_check_names_a_preprocessor_that_leaves_uint8_labels():
    cfg = Config.fromfile(MAIN_CONFIG)
    check_label_packing(cfg)  # the recipe's pair
    cfg.model.data_preprocessor.type = 'SegDataPreProcessor'
    with pytest.raises(InputError) as error:
        check_label_packing(cfg)
    assert 'PackSegInputsUint8' in str(error.value)
    assert "model.data_preprocessor.type='SegDataPreProcessorUint8'" in str(
        error.value)
    # found in a wrapped dataset too
    cfg.train_dataloader.dataset = dict(
        type='RepeatDataset', times=2, dataset=cfg.train_dataloader.dataset)
    with pytest.raises(InputError):
        check_label_packing(cfg)
    # named with its registry's scope too
    cfg.train_dataloader.dataset.dataset.pipeline[-1] = dict(
        type='mmseg.PackSegInputsUint8')
    with pytest.raises(InputError):
        check_label_packing(cfg)
    # mmseg's packing needs nothing of the preprocessor
    cfg.train_dataloader.dataset.dataset.pipeline[-1] = dict(
        type='PackSegInputs')
    check_label_packing(cfg)
