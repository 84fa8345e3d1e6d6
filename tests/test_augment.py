"""EDM's augmentation pipeline: labels, identity when nothing is applied, exact flips and
shifts, and its place in the engine's configuration."""

import math

import pytest
import torch

from bayesgen.training.augment import AugmentPipe, _rotate, _translate

EDM = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)


def smooth_images(n=4, size=32):
    """Band-limited images, so that the anti-aliasing filters leave them (almost) alone."""
    torch.manual_seed(0)
    low = torch.rand(n, 3, 8, 8)
    return torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)


def test_edm_configuration_has_nine_labels():
    pipe = AugmentPipe(p=0.12, **EDM)
    x = torch.rand(512, 3, 32, 32) * 2 - 1
    y, labels = pipe(x)
    assert pipe.label_dim == 9 and labels.shape == (512, 9) and y.shape == x.shape
    flipped_x = labels[:, 0].mean().item()  # every image eligible, flipped with probability 1/2
    assert 0.4 < flipped_x < 0.6
    geometric = (labels[:, 2:] != 0).any(1).float().mean().item()
    assert 0.25 < geometric < 0.45  # 1 − 0.88^4 = 0.40 of the images get some transformation
    assert set(labels[:, 1].unique().tolist()) <= {0.0, 1.0}


def test_nothing_applied_is_the_identity():
    x = smooth_images()
    y, labels = AugmentPipe(p=0.0, **EDM)(x)
    assert labels.abs().max() == 0
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)  # through the 2x resampling


def test_xflip_is_exact_and_labelled():
    x = smooth_images(8)
    y, labels = AugmentPipe(p=1.0, xflip=1e8)(x)
    for i in range(8):
        expected = x[i].flip(2) if labels[i, 0] == 1 else x[i]
        assert torch.equal(y[i], expected)


def test_integer_translation_is_exact_and_rotation_by_pi_flips():
    x = smooth_images()
    n = x.shape[0]
    shifted = AugmentPipe._transform(x, _translate(torch.full((n,), 2.0), torch.zeros(n)))
    torch.testing.assert_close(shifted[..., :, 4:-4], x[..., :, 6:-2], atol=1e-5, rtol=0)
    turned = AugmentPipe._transform(x, _rotate(torch.full((n,), math.pi)))
    assert (turned - x.flip(2, 3)).abs().mean() < 0.01


def test_augment_needs_a_net_with_augmentation_labels():
    from bayesgen.data import DataModule
    from bayesgen.training.build import ConfigError, build_augment, build_task, compose_config

    cfg = compose_config(["data=digits", "+augment._target_=bayesgen.training.augment."
                          "AugmentPipe", "+augment.xflip=1"])
    with pytest.raises(ConfigError, match="augment_labels"):
        build_augment(cfg)
    cfg = compose_config(["data=digits", "net=ddpmpp", "+augment._target_=bayesgen.training."
                          "augment.AugmentPipe", "+augment.xflip=1", "net.model_channels=16",
                          "net.channel_mult=[1]", "net.num_blocks=1", "net.attn_resolutions=[]"])
    with pytest.raises(ConfigError, match="augment_dim=1"):
        build_task(cfg, DataModule("digits"))
