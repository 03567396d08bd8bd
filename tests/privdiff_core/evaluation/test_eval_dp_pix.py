import numpy as np
import pytest
import torch

from privdiff_core.evaluation.baselines.dp_pix import DPPixError, dp_pix, laplace_scale


def _images(n=3, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_dp_pix_is_cell_means_plus_laplace_noise_of_the_paper_scale():
    """Reproduce Fan 2018 by hand: 8-bit values, b x b means, Laplace(255 m / (b^2 eps)), clip."""
    images, b, m, eps, seed = _images(), 8, 1.0, 0.5, 7
    out = dp_pix(images, b, m, eps, seed)
    eight_bit = np.round((images.numpy().astype(np.float64) + 1) * 127.5)
    n, _, s, _ = eight_bit.shape
    means = eight_bit.reshape(n, 1, s // b, b, s // b, b).mean(axis=(3, 5))
    noise = np.random.default_rng(seed).laplace(0.0, 255 * m / (b * b * eps), size=means.shape)
    expected = np.clip(means + noise, 0, 255).repeat(b, axis=2).repeat(b, axis=3) / 127.5 - 1
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert laplace_scale(8, 1, 0.5) == pytest.approx(255 / 32)


def test_noise_has_the_laplace_scale():
    """On mid-grey images (no clipping) |noise| averages the Laplace scale b = 255 m / (b^2 eps)."""
    images = torch.full((40, 1, 64, 64), 128 / 127.5 - 1)
    for b, m, eps in ((4, 1.0, 1.0), (8, 2.0, 0.5)):
        out = dp_pix(images, b, m, eps, seed=1)
        noise = ((out[:, :, ::b, ::b] + 1) * 127.5 - 128).numpy()
        assert np.abs(noise).mean() == pytest.approx(laplace_scale(b, m, eps), rel=0.05)


def test_large_budget_leaves_only_the_pixelization():
    images = _images(2, 16)
    out = dp_pix(images, 4, 1.0, 1e9, seed=0)
    cells = torch.nn.functional.avg_pool2d(torch.round((images + 1) * 127.5), 4) / 127.5 - 1
    torch.testing.assert_close(out[:, :, ::4, ::4], cells, atol=1e-5, rtol=0)


def test_seeded_and_checked():
    images = _images()
    assert torch.equal(dp_pix(images, 8, 1, 1, 3), dp_pix(images, 8, 1, 1, 3))
    assert not torch.equal(dp_pix(images, 8, 1, 1, 3), dp_pix(images, 8, 1, 1, 4))
    with pytest.raises(DPPixError, match="does not tile"):
        dp_pix(images, 5, 1, 1, 0)
    with pytest.raises(DPPixError, match="eps > 0"):
        dp_pix(images, 8, 1, 0, 0)
