# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Every config under configs/ builds and runs a forward pass; the decoder
configs also a backward pass of their training loss (the recipe configs
train end to end in tests/test_tools)."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_wavemix.utils.analysis import build_model_from_config

from .conftest import REPO_ROOT

CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT) for path in glob.glob(
        osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in path)

# Paper Table 6 and the authors' package (19 classes), and the authors'
# classification models.
PARAMS = {
    'wavemix_256x16_l4': 63_164_563,
    'wavemix_256x16_l3': 49_514_643,
    'wavemix_256x16_l2': 35_864_723,
    'wavemix_256x16_l1': 22_214_803,
    'wavemix_128x8_l1': 2_900_819,
    'wavemix_192x16_l3_8xb128_in1k.py': 27_857_608,
    'wavemix_128x7_l1_1xb128_cifar10.py': 2_404_970,
    # the Wave-ViT authors' ImageNet models
    'wavevit-s_8xb128_in1k.py': 22_690_176,
    'wavevit-b_8xb128_in1k.py': 33_516_128,
    'wavevit-l_8xb128_in1k.py': 57_474_504,
    # the SVT authors' ImageNet models
    'svt-s_8xb128_in1k.py': 22_052_592,
    'svt-b_8xb128_in1k.py': 32_878_544,
    'svt-l_8xb128_in1k.py': 54_594_000,
}


def test_configs_found():
    assert 'configs/wavemix/wavemix_256x16_l4_cityscapes.py' in CONFIGS
    assert len(CONFIGS) >= 11


CLASSIFICATION = [c for c in CONFIGS if '_cls/' in c]
SEGMENTATION = [c for c in CONFIGS if c not in CLASSIFICATION]


@pytest.mark.parametrize('config', CLASSIFICATION)
def test_classification_config_builds_and_runs(config):
    cfg, model = build_model_from_config(osp.join(REPO_ROOT, config))
    assert cfg.default_scope == 'mmpretrain'
    model.eval()
    name = osp.basename(config)
    if name in PARAMS:
        assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    size = 224 if 'in1k' in name else 32
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size), mode='tensor')
    assert logits.shape == (2, cfg.model.head.num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('config', SEGMENTATION)
def test_config_builds_and_runs(config):
    # SyncBN becomes BN, as mmengine reverts it when training without a
    # process group.
    cfg, model = build_model_from_config(osp.join(REPO_ROOT, config))
    name = osp.basename(config).split('_cityscapes')[0]
    if name in PARAMS:
        assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    num_classes = cfg.model.decode_head.num_classes
    inputs = torch.randn(2, 3, 64, 128)
    metas = [dict(img_shape=(64, 128), pad_shape=(64, 128))] * 2

    model.eval()
    with torch.no_grad():
        logits = model.encode_decode(inputs, metas)
    assert logits.shape == (2, num_classes, 64, 128)
    assert torch.isfinite(logits).all()
    if 'wavemix_decoders' not in config:
        return

    model.train()
    samples = [
        SegDataSample(
            gt_sem_seg=PixelData(
                data=torch.randint(0, num_classes, (1, 64, 128))),
            metainfo=meta) for meta in metas
    ]
    losses = model.loss(inputs, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.backbone.parameters())


@pytest.mark.parametrize(
    'config', [c for c in CONFIGS if '/wavemix/' in c], ids=osp.basename)
def test_recipe_pipeline_has_no_crop_or_color_jitter(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandomCrop' not in types and 'PhotoMetricDistortion' not in types
    assert 'RandomFlip' in types


def test_recipe_optimizers_are_fused_and_build_here():
    """AdamW, then SGD (OptimizerSwitchHook): PyTorch's fused optimizers
    (on CUDA under AMP the step reads nothing on the host: tests/test_cuda),
    which build and step on CPU too."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/wavemix/wavemix_256x16_l4_cityscapes.py'))
    switch, = [h for h in cfg.custom_hooks
               if h['type'] == 'OptimizerSwitchHook']
    model = torch.nn.Conv2d(3, 4, 1)
    for optimizer in (cfg.optim_wrapper.optimizer, switch['optimizer']):
        assert optimizer['fused'] is True
        wrapper = build_optim_wrapper(
            model, dict(type='OptimWrapper', optimizer=optimizer))
        before = model.weight.detach().clone()
        wrapper.update_params(model(torch.randn(1, 3, 2, 2)).sum())
        assert wrapper.optimizer.defaults['fused']
        assert not torch.equal(before, model.weight)


def test_model_index_names_every_config():
    """model-index.yml (what mim reads) lists each config once, by its name,
    with its task, training data and total batch (GPUs x per-GPU batch, as
    its name says)."""
    from mmengine.fileio import load

    data = {'CityscapesDataset': 'Cityscapes', 'ADE20KDataset': 'ADE20K',
            'ImageNet': 'ImageNet-1k', 'CIFAR10': 'CIFAR-10',
            'CIFAR100': 'CIFAR-100', 'CustomDataset': 'digits (scikit-learn)'}
    tasks = {'EncoderDecoder': 'Semantic Segmentation',
             'ImageClassifier': 'Image Classification'}
    index = load(osp.join(REPO_ROOT, 'model-index.yml'))
    models = []
    for metafile in index['Import']:
        meta = load(osp.join(REPO_ROOT, metafile))
        collection, = meta['Collections']
        for model in meta['Models']:
            assert model['In Collection'] == collection['Name']
            assert model['Paper'] == collection['Paper']
            assert model['Metadata']['Training Data'] in \
                collection['Metadata']['Training Data']
        models += meta['Models']
    assert sorted(m['Config'] for m in models) == CONFIGS
    for model in models:
        cfg = Config.fromfile(osp.join(REPO_ROOT, model['Config']))
        name = osp.splitext(osp.basename(model['Config']))[0]
        gpus = re.search(r'_(\d+)xb\d+', name)
        metadata = model['Metadata']
        assert model['Name'] == name
        assert metadata['Task'] == tasks[cfg.model.type]
        assert metadata['Training Data'] == (
            'Cityscapes-format demo data' if 'demo' in name else
            data[cfg.train_dataloader.dataset.type]), name
        assert metadata['Batch Size'] == cfg.train_dataloader.batch_size * (
            int(gpus.group(1)) if gpus else 1), name
        # the batch the learning rates are for (tools/train.py warns at
        # another, --auto-scale-lr scales them)
        assert cfg.auto_scale_lr.base_batch_size == metadata['Batch Size']
        assert cfg.model.backbone.type in metadata['Architecture'][0]
