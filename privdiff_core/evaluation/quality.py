"""Image quality: SSIM per image against its anonymized version, a Fréchet distance between
the real and anonymized feature distributions, and how much fine detail the images keep.

The paper reports FID (Inception-v3 features). No Inception weights can be downloaded here, and
the libraries that compute true FID (pytorch-fid, torch-fidelity, and torchmetrics through
torch-fidelity) all need torchvision, which does not import beside the pinned CPU torch. So the
Fréchet distance is computed on the diagnosis network's embedding and named for what it is,
"FD-<backbone>" (e.g. FD-small, FD-densenet121), never "FID"; its values are not on FID's scale.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from skimage.filters import laplace
from skimage.metrics import structural_similarity

from privdiff_core.errors import PrivdiffError

# Images live in [-1, 1] (Contract 2), so the dynamic range SSIM must assume is 2.
DATA_RANGE = 2.0


class UnsupportedMetricError(PrivdiffError):
    """A metric the user asked for that this installation cannot compute honestly."""


def ssim_per_image(real: torch.Tensor, anonymized: torch.Tensor) -> np.ndarray:
    """SSIM (Wang et al. 2004, scikit-image) of each image against its anonymized version."""
    if real.shape != anonymized.shape:
        raise ValueError(f"shape mismatch: {tuple(real.shape)} vs {tuple(anonymized.shape)}")
    a = real.detach().cpu().double().numpy()[:, 0]
    b = anonymized.detach().cpu().double().numpy()[:, 0].clip(-1.0, 1.0)
    return np.array([structural_similarity(x, y, data_range=DATA_RANGE) for x, y in zip(a, b, strict=True)])


def fine_detail(images: torch.Tensor, border: int = 2) -> np.ndarray:
    """Mean absolute Laplacian (scikit-image) of each image (B, 1, S, S) in [-1, 1], `border`
    pixels at each edge left out: its high-frequency energy (ribs, vessel markings, edges).

    SSIM against another film and the Fréchet distance barely move when a film is blurred evenly
    (a generated film shares no pixels with its input); this falls with every bit of blur.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected (B, 1, S, S) images, got {tuple(images.shape)}")
    if min(images.shape[-2:]) <= 2 * border:
        raise ValueError(
            f"images of {tuple(images.shape[-2:])} pixels leave nothing inside a {border}-pixel border"
        )
    inner = slice(border, -border) if border else slice(None)
    films = images.detach().cpu().double().numpy()[:, 0]
    return np.array([np.abs(laplace(film, ksize=3))[inner, inner].mean() for film in films])


def detail_share(real: torch.Tensor, anonymized: torch.Tensor) -> float | None:
    """The anonymized images' mean `fine_detail` as a share of the real ones' (1: as sharp as real
    films; the demo's federated autoencoder alone keeps ~0.25); None when the real images have none."""
    reference = float(fine_detail(real).mean())
    return None if reference == 0.0 else float(fine_detail(anonymized.clamp(-1.0, 1.0)).mean()) / reference


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)): the paper's FID formula on any features.

    The matrix square root is scipy's; tiny imaginary parts from round-off are dropped, and a
    singular product (fewer samples than dimensions) is regularised as pytorch-fid does.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError("features must be two (N, D) arrays with the same D")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two samples per side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)))


def refuse_inception_fid(weights_path: str | None) -> None:
    """`evaluate.inception_weights` is accepted only as null: say clearly why true FID is not offered."""
    if weights_path:
        raise UnsupportedMetricError(
            f"evaluate.inception_weights={weights_path!r}: true FID is not supported in this installation. "
            "The maintained FID implementations (pytorch-fid, torch-fidelity, torchmetrics' FID) need "
            "torchvision, which cannot be installed beside the pinned CPU torch, and privdiff does not "
            "re-implement Inception-v3. The report gives FD-<backbone> (the same Fréchet formula on the "
            "diagnosis network's features) instead. Remove the key (set it to null) to continue."
        )
