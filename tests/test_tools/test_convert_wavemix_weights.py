# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""tools/convert_wavemix_weights.py: the authors' state dict -> a checkpoint
that load_from and tools/test.py accept, with the same logits."""
import torch
from mmengine.runner import load_checkpoint

from ..test_models.test_utils.test_ckpt_convert import build_segmentor
from .demo_data import run_tool


def test_converted_checkpoint_gives_reference_logits(reference_fixtures,
                                                     tmp_path):
    fixture = reference_fixtures['segmentation'][3]  # level 4
    src, dst = tmp_path / 'authors.pth', tmp_path / 'out' / 'converted.pth'
    torch.save(fixture['state_dict'], src)
    result = run_tool('convert_wavemix_weights.py', src, dst)
    assert 'converted' in result.stdout

    model = build_segmentor(fixture['kwargs']).eval()
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    inputs = fixture['inputs']
    with torch.no_grad():
        logits = model.encode_decode(
            inputs, [dict(img_shape=inputs.shape[-2:])] * len(inputs))
    torch.testing.assert_close(logits, fixture['outputs'], atol=1e-4, rtol=0)


def test_bad_sources_exit_with_one_readable_line(tmp_path):
    missing = run_tool(
        'convert_wavemix_weights.py', tmp_path / 'nope.pth',
        tmp_path / 'out.pth', check=False)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        f'error: checkpoint not found: {tmp_path / "nope.pth"}'
    ]

    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    result = run_tool('convert_wavemix_weights.py', corrupt,
                      tmp_path / 'out.pth', check=False)
    assert result.returncode != 0
    assert 'cannot read' in result.stderr and 'Traceback' not in result.stderr

    foreign = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, foreign)
    result = run_tool('convert_wavemix_weights.py', foreign,
                      tmp_path / 'out.pth', check=False)
    assert result.returncode != 0
    assert 'not WaveMix weights' in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_wavevit_converter(tmp_path):
    """tools/convert_wavevit_weights.py: the authors' checkpoint (here made
    of seeded weights in their layout) -> backbone.* that mmseg loads
    strictly into WaveViT; --with-head for the mmpretrain classifier; a
    foreign key is named in one line."""
    import sys

    from mmseg_wavemix.models.backbones import WaveViT

    from ..conftest import DATA_DIR
    sys.path.insert(0, DATA_DIR)
    from seeded_weights import seeded_state_dict
    fixtures = torch.load(
        f'{DATA_DIR}/wavevit_reference_fixtures.pth', weights_only=True)
    case = fixtures['cases'][0]
    src = tmp_path / 'wavevit_s.pth'
    weights = seeded_state_dict(case['shapes'], case['seed'])
    torch.save({'state_dict': {f'module.{k}': v
                               for k, v in weights.items()}}, src)
    result = run_tool('convert_wavevit_weights.py', src, tmp_path / 'bb.pth')
    assert 'converted' in result.stdout
    converted = torch.load(tmp_path / 'bb.pth')['state_dict']
    WaveViT('s').load_state_dict(
        {k[len('backbone.'):]: v for k, v in converted.items()}, strict=True)

    run_tool('convert_wavevit_weights.py', src, tmp_path / 'cls.pth',
             '--with-head')
    assert 'head.aux_fc.weight' in torch.load(
        tmp_path / 'cls.pth')['state_dict']

    torch.save({**weights, 'classifier.weight': torch.zeros(1)},
               tmp_path / 'other.pth')
    failed = run_tool('convert_wavevit_weights.py', tmp_path / 'other.pth',
                      tmp_path / 'out.pth', check=False)
    assert failed.returncode != 0 and 'Traceback' not in failed.stderr
    assert "not Wave-ViT weights, e.g. ['classifier.weight']" in \
        failed.stderr


def test_svt_converter(tmp_path):
    """tools/convert_svt_weights.py: their checkpoint as their main.py saves
    it ({'model': ...}, with the DTCWT filter buffers) -> backbone.* that
    loads strictly into ScatteringViT; a foreign file in one line."""
    import sys

    from mmseg_wavemix.models.backbones import ScatteringViT

    from ..conftest import DATA_DIR
    sys.path.insert(0, DATA_DIR)
    from seeded_weights import seeded_state_dict
    fixtures = torch.load(
        f'{DATA_DIR}/svt_reference_fixtures.pth', weights_only=True)
    case = fixtures['cases'][0]
    weights = seeded_state_dict(case['shapes'], case['seed'])
    weights['block1.0.attn.xfm.h0o'] = torch.ones(1, 1, 13, 1)
    src = tmp_path / 'svt_s.pth'
    torch.save({'model': weights, 'epoch': 309}, src)
    result = run_tool('convert_svt_weights.py', src, tmp_path / 'bb.pth')
    assert 'converted' in result.stdout
    converted = torch.load(tmp_path / 'bb.pth')['state_dict']
    ScatteringViT('s').load_state_dict(
        {k[len('backbone.'):]: v for k, v in converted.items()}, strict=True)

    torch.save(fixtures, tmp_path / 'not_weights.pth')
    failed = run_tool('convert_svt_weights.py', tmp_path / 'not_weights.pth',
                      tmp_path / 'out.pth', check=False)
    assert failed.returncode != 0 and 'Traceback' not in failed.stderr
    assert 'not SVT weights' in failed.stderr
    assert not (tmp_path / 'out.pth').exists()
