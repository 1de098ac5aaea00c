# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Generate parity fixtures from the authors' reference package.

The fixtures (small models with random weights and randomised BatchNorm
statistics, an input batch and the reference outputs) let the tests check our
implementation against ``wavemix==0.2.4`` without installing it.

The reference needs numpy < 2, so run this in a separate environment::

    python3 -m venv /tmp/wavemix-ref
    /tmp/wavemix-ref/bin/pip install torch==2.13.0 "numpy<2" "setuptools<81"
    /tmp/wavemix-ref/bin/pip install --no-deps wavemix==0.2.4 einops PyWavelets
    /tmp/wavemix-ref/bin/python tests/data/make_reference_fixtures.py

It writes ``tests/data/wavemix_reference_fixtures.pth``.
"""
import os.path as osp

import torch
import wavemix
from wavemix.classification import WaveMix as ReferenceClassifier
from wavemix.SemSegment import WaveMix as ReferenceSegmenter

OUT = osp.join(osp.dirname(osp.abspath(__file__)),
               'wavemix_reference_fixtures.pth')

# Small models: D = 16 channels, 2 blocks, ff_channel != D to catch mix-ups.
SEGMENTATION = [
    dict(num_classes=5, depth=2, mult=2, ff_channel=12, final_dim=16,
         dropout=0., level=level, stride=2) for level in (1, 2, 3, 4)
]
CLASSIFICATION = [
    dict(num_classes=7, depth=2, mult=2, ff_channel=12, final_dim=16,
         dropout=0., level=3, initial_conv='pachify', patch_size=4),
    dict(num_classes=7, depth=2, mult=2, ff_channel=16, final_dim=16,
         dropout=0., level=1, initial_conv='strided', stride=1),
]


def randomize_batchnorm(model, generator):
    """Non-trivial running statistics and affine parameters, so that eval-mode
    BatchNorm is exercised by the comparison."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def make_case(model_cls, kwargs, input_shape, seed):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = model_cls(**kwargs)
    randomize_batchnorm(model, generator)
    model.eval()
    inputs = torch.randn(*input_shape, generator=generator)
    with torch.no_grad():
        outputs = model(inputs)
    return dict(
        kwargs=kwargs,
        state_dict={k: v.clone()
                    for k, v in model.state_dict().items()},
        inputs=inputs,
        outputs=outputs,
        num_params=sum(p.numel() for p in model.parameters()))


def main():
    fixtures = dict(
        reference='wavemix==0.2.4',
        torch=str(torch.__version__),
        segmentation=[
            make_case(ReferenceSegmenter, kw, (1, 3, 64, 128), seed=i)
            for i, kw in enumerate(SEGMENTATION)
        ],
        classification=[
            make_case(ReferenceClassifier, kw, (2, 3, 32, 32), seed=10 + i)
            for i, kw in enumerate(CLASSIFICATION)
        ])
    torch.save(fixtures, OUT)
    print(f'wrote {OUT} (reference {wavemix.__name__} 0.2.4)')


if __name__ == '__main__':
    main()
