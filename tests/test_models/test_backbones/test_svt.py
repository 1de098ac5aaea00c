# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""What SVT (ScatteringViT) adds to Wave-ViT's network: its low-pass
filter, sized by ``img_size`` and resized for other inputs and other
weights. Parity with the authors' code and the shared behaviour are in
test_wavevit_family.py."""
import pytest
import torch

from mmseg_wavemix.models.backbones import ScatteringViT

from .test_wavevit_family import TINY


def test_img_size_sizes_the_filter_and_other_sizes_resize_it():
    """At its img_size the model uses its filter as is; a model with another
    img_size loading those weights (ImageNet 224 -> ADE20K 512) gets the
    filter resized once, and gives what the first model gives for an input
    of the second size."""
    small = ScatteringViT(TINY).eval()
    assert small.block1[0].attn.complex_weight_ll.shape == (16, 56, 56)
    assert ScatteringViT(TINY, img_size=(228, 100)).block1[
        0].attn.complex_weight_ll.shape == (16, 58, 26)
    large = ScatteringViT(TINY, img_size=512).eval()
    large.load_state_dict(small.state_dict())
    assert large.block1[0].attn.complex_weight_ll.shape == (16, 128, 128)
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        for a, b in zip(small(x), large(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_resized_filter_gets_gradients():
    model = ScatteringViT(TINY).train()
    sum(o.sum() for o in model(torch.randn(1, 3, 96, 80))).backward()
    grad = model.block1[0].attn.complex_weight_ll.grad
    assert grad.shape == (16, 56, 56) and grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs,match', [
    (dict(img_size=0), 'img_size'),
    (dict(arch=dict(TINY, embed_dims=[18, 24, 32, 40])), 'divisible'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScatteringViT(**kwargs)


def test_a_checkpoint_of_another_img_size_is_named_as_such():
    """tools/test.py checks a checkpoint against the config before loading
    it: SVT weights of another img_size get their own cause."""
    from mmseg_wavemix.utils.checkpoints import check_fits
    from mmseg_wavemix.utils.checks import InputError
    weights = ScatteringViT(TINY).state_dict()
    with pytest.raises(InputError) as error:
        check_fits(ScatteringViT(TINY, img_size=512), weights, 'svt.pth')
    assert "set the backbone's img_size to (224, 224)" in str(error.value)
