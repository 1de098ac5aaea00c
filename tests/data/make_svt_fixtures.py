# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Parity fixtures from the authors' SVT code (github badripatro/svt,
``svt.py``), run apart from this package.

Their code needs torch, numpy and pytorch_wavelets; the timm helpers it
imports are stood in for (``make_wavevit_fixtures.stand_in_for_timm``).
Their model runs at 224x224 only. The weights are not stored: both this
script and the tests make them from names and shapes
(``seeded_weights.py``). Stored: the authors' parameter counts of S/B/L,
and for S and L one 224x224 input, the four stage features (each stage
normalised by its ``norm{i}``, as their Wave-ViT's segmentation backbone)
and the eval-mode classifier logits (``cls + 0.5 * max`` over the
token-labelling head)::

    python tests/data/make_svt_fixtures.py PATH/TO/svt

It writes ``tests/data/svt_reference_fixtures.pth``.
"""
import argparse
import os.path as osp
import sys

import torch

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
import make_wavevit_fixtures as wavevit  # noqa: E402

OUT = osp.join(HERE, 'svt_reference_fixtures.pth')
NUM_CLASSES = 10
# The DTCWT's fixed filters (pytorch_wavelets buffers): not weights.
FILTER_BUFFERS = ('.xfm.', '.ifm.')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('code', help="the folder of the authors' svt.py")
    args = parser.parse_args()
    wavevit.stand_in_for_timm()
    sys.path.insert(0, args.code)
    import svt

    fixtures = dict(
        num_classes=NUM_CLASSES,
        num_params=wavevit.parameter_counts(
            lambda arch: getattr(svt, f'svt_{arch}')()),
        cases=[])
    for seed, arch in enumerate(('s', 'l')):
        model = getattr(svt, f'svt_{arch}')(num_classes=NUM_CLASSES)
        shapes = wavevit.load_seeded_weights(
            model, seed, lambda key: any(f in key for f in FILTER_BUFFERS))
        model.eval()
        generator = torch.Generator().manual_seed(200 + seed)
        inputs = torch.randn(1, 3, 224, 224, generator=generator)
        fixtures['cases'].append(
            wavevit.reference_case(model, arch, seed, shapes, inputs))
    torch.save(fixtures, OUT)
    print(f'wrote {OUT}: {fixtures["num_params"]}')


if __name__ == '__main__':
    main()
