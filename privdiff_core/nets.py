"""Image networks shared by the attackers, the judges and the anonymizer's own encoders.

`small` is a plain CNN sized for CPUs (tiny/demo configs); `resnet50` and `densenet121` are the
paper-scale backbones (MONAI's implementations, random init: no weights can be downloaded).
All take (B, 1, S, S) images in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BACKBONES = ("small", "resnet50", "densenet121")


class SmallConvNet(nn.Module):
    """Stride-2 conv blocks (conv-GroupNorm-SiLU), pooling, linear embedding.

    `pool_grid` 1: global average pooling, which keeps what the features are but not where.
    G > 1: the features averaged over each cell of a G x G grid and flattened, so the embedding
    also knows where in the film a feature lies. Radiographs are aligned, and a finding's place is
    part of what it is (an effusion at the costophrenic angle, the heart's border).
    """

    def __init__(
        self,
        embed_dim: int = 128,
        widths: tuple[int, ...] = (32, 64, 128, 128),
        in_channels: int = 1,
        pool_grid: int = 1,
    ):
        super().__init__()
        if pool_grid < 1:
            raise ValueError(f"pool_grid must be >= 1, got {pool_grid}")
        self.pool_grid = pool_grid
        layers: list[nn.Module] = []
        prev = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(prev, width, 3, stride=2, padding=1),
                nn.GroupNorm(8, width),
                nn.SiLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.GroupNorm(8, width),
                nn.SiLU(),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(prev * pool_grid * pool_grid, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        if self.pool_grid == 1:
            return self.embed(features.mean(dim=(2, 3)))
        return self.embed(nn.functional.adaptive_avg_pool2d(features, self.pool_grid).flatten(1))


def build_backbone(
    name: str, embed_dim: int, widths: tuple[int, ...] | None = None, pool_grid: int = 1
) -> nn.Module:
    """An image -> embedding network by config name (see BACKBONES); `pool_grid`: SmallConvNet's
    (the MONAI backbones pool as they are built)."""
    if name != "small" and pool_grid != 1:
        raise ValueError(f"pool_grid {pool_grid} applies to the small backbone only, not {name!r}")
    if name == "small":
        return SmallConvNet(embed_dim, tuple(widths) if widths else (32, 64, 128, 128), pool_grid=pool_grid)
    if name == "resnet50":
        from monai.networks.nets import resnet50

        return resnet50(spatial_dims=2, n_input_channels=1, num_classes=embed_dim)
    if name == "densenet121":
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=2, in_channels=1, out_channels=embed_dim)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


class SiameseVerifier(nn.Module):
    """Patient verification (Packhäuser et al. 2022): weight-shared branches, |e1 - e2|, one logit."""

    def __init__(self, backbone: str = "small", embed_dim: int = 128, widths: tuple[int, ...] | None = None):
        super().__init__()
        self.backbone = build_backbone(backbone, embed_dim, widths)
        self.head = nn.Linear(embed_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Logit that x1 and x2 show the same patient."""
        return self.head((self.embed(x1) - self.embed(x2)).abs()).squeeze(-1)


class ImageClassifier(nn.Module):
    """Backbone + linear head: multi-label findings, age group or sex."""

    def __init__(
        self,
        num_outputs: int,
        backbone: str = "small",
        embed_dim: int = 128,
        widths: tuple[int, ...] | None = None,
        pool_grid: int = 1,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, embed_dim, widths, pool_grid)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, num_outputs))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def jitter(images: torch.Tensor, rng: np.random.Generator, max_shift: int = 3) -> torch.Tensor:
    """A follow-up's nuisances on a training batch: shifted by up to `max_shift` pixels, contrast
    and brightness changed a little. Four films per patient are few; without this the judges
    memorise the training patients instead of learning the findings."""
    n = len(images)
    pad = torch.nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    size_y, size_x = images.shape[-2:]
    shifted = torch.stack([pad[k, :, dy[k] : dy[k] + size_y, dx[k] : dx[k] + size_x] for k in range(n)])
    gain = torch.from_numpy(1.0 + 0.1 * rng.standard_normal(n)).float().view(n, 1, 1, 1)
    offset = torch.from_numpy(0.05 * rng.standard_normal(n)).float().view(n, 1, 1, 1)
    return (shifted * gain + offset).clamp(-1.0, 1.0)


def finding_pos_weight(labels: torch.Tensor, label_mask: torch.Tensor, cap: float = 10.0) -> torch.Tensor:
    """BCE weight of a positive label per finding: sqrt(negatives / positives), in [1, cap].

    The square root balances halfway: full balancing (negatives / positives, up to ~30 here) makes
    the few positives dominate each batch and the training noisy. Counts use known labels only;
    a finding without known positives keeps weight 1.
    """
    known = label_mask.float()
    positives = (labels.float() * known).sum(0)
    negatives = ((1.0 - labels.float()) * known).sum(0)
    ratio = torch.where(positives > 0, negatives / positives.clamp(min=1.0), torch.ones_like(positives))
    return ratio.sqrt().clamp(1.0, cap)
