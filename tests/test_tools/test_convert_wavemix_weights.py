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
        f'error: source checkpoint not found: {tmp_path / "nope.pth"}'
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
