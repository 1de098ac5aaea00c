# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_wavemix.models.backbones import WaveMix

TINY = dict(embed_dims=16, depth=3, level=2, ff_channels=8)


def test_output_shapes_and_default_out_indices():
    model = WaveMix(**TINY)
    outs = model(torch.randn(2, 3, 64, 96))
    assert isinstance(outs, tuple) and len(outs) == 1
    assert outs[0].shape == (2, 16, 16, 24)


@pytest.mark.parametrize('level', [1, 2, 3, 4])
@pytest.mark.parametrize('size', [(100, 200), (65, 33), (8, 8)])
def test_any_input_size_is_padded_and_cropped(level, size):
    model = WaveMix(embed_dims=16, depth=2, level=level).eval()
    h, w = size
    out, = model(torch.randn(1, 3, h, w))
    # stride-2 stem twice: ceil(ceil(n / 2) / 2)
    assert out.shape == (1, 16, -(-h // 4), -(-w // 4))
    assert torch.isfinite(out).all()


def test_padding_matches_an_explicitly_padded_input():
    """Internal padding is the same as running the blocks on zero-padded
    stem features and cropping."""
    model = WaveMix(**TINY).eval()
    x = torch.randn(1, 3, 40, 52)  # stem output 10x13, blocks need 4 | size
    out, = model(x)
    with torch.no_grad():
        feat = model.stem(x)
        feat = torch.nn.functional.pad(feat, (0, 3, 0, 2))
        for layer in model.layers:
            feat = layer(feat)
    torch.testing.assert_close(out, feat[..., :10, :13])


def test_out_indices():
    model = WaveMix(**TINY, out_indices=(0, -1)).eval()
    outs = model(torch.randn(1, 3, 32, 32))
    assert len(outs) == 2
    assert model.out_indices == (0, 2)
    with torch.no_grad():
        first = model.layers[0](model.stem(torch.zeros(1, 3, 32, 32)))
    assert first.shape == outs[0].shape


def test_with_cp_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    plain = WaveMix(**TINY)
    checkpointed = WaveMix(**TINY, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 48)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        out, = model(x)
        out.pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name])
    torch.testing.assert_close(checkpointed(x)[0], plain(x)[0])


def test_frozen_stages():
    model = WaveMix(**TINY, frozen_stages=1)
    model.train()
    for module in (model.stem, model.layers[0]):
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in model.layers[1:]:
        assert module.training
        assert all(p.requires_grad for p in module.parameters())
    running_mean = model.layers[0].mlps[0].bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.layers[0].mlps[0].bn.running_mean,
                               running_mean)


def test_norm_eval():
    model = WaveMix(**TINY, norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert model.layers[0].mlps[0].fc1.training


def test_patchify_stem():
    model = WaveMix(
        embed_dims=16, depth=1, level=2, stem_type='patchify', patch_size=4)
    out, = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16, 8, 8)
    assert model.size_divisor == 4 * 4


@pytest.mark.parametrize('kwargs, match', [
    (dict(level=0), 'level'),
    (dict(level=5), 'level'),
    (dict(embed_dims=30), 'embed_dims'),
    (dict(depth=0), 'depth'),
    (dict(stem_stride=0), 'stem_stride'),
    (dict(dwt_backend='haar_cuda'), 'dwt_backend'),
    (dict(stem_type='conv'), 'stem_type'),
    (dict(out_indices=(16, )), 'out_indices'),
    (dict(frozen_stages=17), 'frozen_stages'),
    (dict(mlp_ratio=0), 'mlp_ratio'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WaveMix(**kwargs)


def test_wrong_input_channels():
    with pytest.raises(ValueError, match='in_channels'):
        WaveMix(**TINY)(torch.randn(1, 1, 32, 32))
