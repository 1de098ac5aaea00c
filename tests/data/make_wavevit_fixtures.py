# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Parity fixtures from the authors' Wave-ViT code (github
YehLi/ImageNetModel, ``classification/wavevit.py`` and
``classification/torch_wavelets.py``), run apart from this package.

Their code needs torch, numpy and PyWavelets; the few timm helpers it
imports are stood in for below. The weights are not stored: both this
script and the tests make them from names and shapes
(``seeded_weights.py``). Stored: the authors' parameter counts of S/B/L,
and for S and B at two input sizes the inputs, the four stage features
(their segmentation backbone's outputs: each stage normalised by its
``norm{i}``) and the eval-mode classifier logits (``cls + 0.5 * max`` over
the token-labelling head)::

    python tests/data/make_wavevit_fixtures.py \
        PATH/TO/ImageNetModel/classification

It writes ``tests/data/wavevit_reference_fixtures.pth``.
"""
import argparse
import os.path as osp
import sys
import types

import torch
import torch.nn as nn

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
from seeded_weights import seeded_state_dict  # noqa: E402

OUT = osp.join(HERE, 'wavevit_reference_fixtures.pth')
NUM_CLASSES = 10
SIZES = [(64, 64), (96, 128)]
# Their fixed Haar filters (fp16 buffers): not weights.
FILTER_BUFFERS = ('.dwt.w_ll', '.dwt.w_lh', '.dwt.w_hl', '.dwt.w_hh',
                  '.idwt.filters')
HEADS = ('post_network.', 'head.', 'aux_head.')


def stand_in_for_timm():
    """The timm names wavevit.py imports, as plain torch."""

    class DropPath(nn.Module):  # only built with rate 0 here

        def __init__(self, drop_prob=0.):
            super().__init__()
            assert drop_prob == 0

        def forward(self, x):
            return x

    layers = types.ModuleType('timm.models.layers')
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, tuple) else (x, x)
    layers.trunc_normal_ = lambda t, std=1.: nn.init.trunc_normal_(t, std=std)
    registry = types.ModuleType('timm.models.registry')
    registry.register_model = lambda fn: fn
    vit = types.ModuleType('timm.models.vision_transformer')
    vit._cfg = lambda **kwargs: dict(kwargs)
    models = types.ModuleType('timm.models')
    models.layers, models.registry = layers, registry
    models.vision_transformer = vit
    timm = types.ModuleType('timm')
    timm.models = models
    sys.modules.update({
        'timm': timm,
        'timm.models': models,
        'timm.models.layers': layers,
        'timm.models.registry': registry,
        'timm.models.vision_transformer': vit
    })


def stage_features(model, x):
    """Their segmentation backbone's forward (mmseg copy of wavevit.py)."""
    outs = []
    for i in range(model.num_stages):
        x, h, w = getattr(model, f'patch_embed{i + 1}')(x)
        for block in getattr(model, f'block{i + 1}'):
            x = block(x, h, w)
        x = getattr(model, f'norm{i + 1}')(x)
        x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
        outs.append(x)
    return outs


def count(model, skip=()):
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(skip))


def parameter_counts(build):
    """The authors' counts of S/B/L (``build(arch)``: their ImageNet model)
    with and without the heads."""
    counts = {}
    for arch in ('s', 'b', 'l'):
        model = build(arch)
        counts[arch] = dict(with_heads=count(model),
                            backbone=count(model, HEADS))
    return counts


def reference_case(model, arch, seed, shapes, inputs):
    """What the tests compare with: the stage features and the eval-mode
    logits of ``model`` (made from ``seed`` and ``shapes``) for ``inputs``.
    """
    with torch.no_grad():
        return dict(arch=arch, seed=seed, shapes=shapes, inputs=inputs,
                    features=stage_features(model, inputs),
                    logits=model(inputs))


def load_seeded_weights(model, seed, is_filter):
    """Seeded weights (``seeded_weights.py``) for every tensor of ``model``
    but its fixed filters (``is_filter(key)``); returns their shapes, from
    which the tests make the same weights."""
    shapes = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items() if not is_filter(k)
    }
    missing, unexpected = model.load_state_dict(
        seeded_state_dict(shapes, seed), strict=False)
    assert not unexpected and all(map(is_filter, missing)), missing
    return shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('code', help="the authors' classification folder")
    args = parser.parse_args()
    stand_in_for_timm()
    sys.path.insert(0, args.code)
    import wavevit

    fixtures = dict(
        num_classes=NUM_CLASSES,
        num_params=parameter_counts(
            lambda arch: getattr(wavevit, f'wavevit_{arch}')()),
        cases=[])
    for seed, arch in enumerate(('s', 'b')):
        model = getattr(wavevit, f'wavevit_{arch}')(num_classes=NUM_CLASSES)
        shapes = load_seeded_weights(
            model, seed, lambda key: key.endswith(FILTER_BUFFERS))
        model.float().eval()  # their filters are fp16 buffers
        generator = torch.Generator().manual_seed(100 + seed)
        for size in SIZES:
            inputs = torch.randn(2, 3, *size, generator=generator)
            fixtures['cases'].append(
                reference_case(model, arch, seed, shapes, inputs))
    torch.save(fixtures, OUT)
    print(f'wrote {OUT}: {fixtures["num_params"]}')


if __name__ == '__main__':
    main()
