import numpy as np
import pytest
import torch
from eval_toydata import synth_splits
from scipy.ndimage import gaussian_filter

from privdiff_core.evaluation.quality import (
    UnsupportedMetricError,
    detail_share,
    fine_detail,
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


def test_fine_detail_falls_with_blur_that_ssim_against_a_new_film_does_not_see():
    """Synthetic chest films (ribs, vessel markings) against the same films blurred by one pixel:
    the share of fine detail they keep falls far below 1, while SSIM against *another* patient's
    film (what a generated film is compared with) hardly changes."""
    films = synth_splits(sites=1, patients=20, images_per_patient=2, size=64).test.images[:6].float()
    blurred = torch.from_numpy(gaussian_filter(films.numpy(), sigma=(0, 0, 1, 1))).float()
    assert (fine_detail(blurred) < 0.6 * fine_detail(films)).all()
    assert detail_share(films, films) == pytest.approx(1.0)
    assert detail_share(films, blurred) < 0.6
    others = films.roll(1, dims=0)  # each film beside another patient's, sharp or blurred
    assert abs(ssim_per_image(others, blurred).mean() - ssim_per_image(others, films).mean()) < 0.15
    noise = torch.rand_like(films) * 2 - 1
    assert detail_share(films, noise) > 1.5


def test_fine_detail_of_a_flat_film_is_zero_and_bad_shapes_are_refused():
    flat = torch.zeros(2, 1, 16, 16)
    assert (fine_detail(flat) == 0).all()
    assert detail_share(flat, torch.rand(2, 1, 16, 16)) is None
    with pytest.raises(ValueError, match="B, 1, S, S"):
        fine_detail(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="border"):
        fine_detail(torch.zeros(1, 1, 4, 4))
