import numpy as np
import pytest
import torch

from privdiff_core.evaluation.quality import (
    UnsupportedMetricError,
    frechet_distance,
    refuse_inception_fid,
    ssim_per_image,
)


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    assert np.allclose(ssim_per_image(images, images), 1.0)
    noisy = (images + 0.5 * torch.randn_like(images)).clamp(-1, 1)
    assert (ssim_per_image(images, noisy) < 0.9).all()


def test_frechet_distance_matches_the_gaussian_closed_form():
    """For N(mu1, diag s1^2) vs N(mu2, diag s2^2): |mu1 - mu2|^2 + sum (s1 - s2)^2."""
    rng = np.random.default_rng(0)
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, -0.5, 0.0])
    s1, s2 = np.ones(4), np.array([1.0, 2.0, 0.5, 1.0])
    a = mu1 + s1 * rng.standard_normal((200_000, 4))
    b = mu2 + s2 * rng.standard_normal((200_000, 4))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_survives_fewer_samples_than_dimensions():
    rng = np.random.default_rng(0)
    value = frechet_distance(rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 1)
    assert np.isfinite(value) and value > 0


def test_true_fid_is_refused_with_the_reason():
    refuse_inception_fid(None)
    with pytest.raises(UnsupportedMetricError, match="torchvision"):
        refuse_inception_fid("/models/pt_inception.pth")
