"""DP-Pix (Fan 2018, "Image pixelization with differential privacy").

On 8-bit pixel values: average each b x b cell, add Laplace noise of scale 255 * m / (b^2 * eps)
to each cell mean, and fill the cell with the result. The scale is the cell mean's sensitivity
when up to m pixels may change by up to 255 (the m-neighbourhood), divided by the budget eps.
Clipping to [0, 255] afterwards is post-processing and keeps the guarantee.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from privdiff_core.errors import PrivdiffError


class DPPixError(PrivdiffError, ValueError):
    """Bad DP-Pix settings or an image size that the cell grid does not tile."""


def laplace_scale(b: int, m: float, eps: float) -> float:
    """Noise scale on the 8-bit scale: 255 * m / (b^2 * eps)."""
    return 255.0 * m / (b * b * eps)


def to_uint8_scale(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> 8-bit values 0..255 (rounded: the mechanism is defined on 8-bit images)."""
    return torch.round((images.clamp(-1.0, 1.0) + 1.0) * 127.5)


def dp_pix(images: torch.Tensor, b: int, m: float, eps: float, seed: int) -> torch.Tensor:
    """DP-Pix of (N, 1, S, S) images in [-1, 1]; returns the same shape in [-1, 1]."""
    if b < 1 or m <= 0 or eps <= 0:
        raise DPPixError(f"DP-Pix needs b >= 1, m > 0 and eps > 0 (got b={b}, m={m}, eps={eps})")
    height, width = images.shape[-2:]
    if height % b or width % b:
        raise DPPixError(f"cell size b={b} does not tile {height}x{width} images; choose b dividing {height}")
    cells = F.avg_pool2d(to_uint8_scale(images).double(), kernel_size=b)
    noise = np.random.default_rng(seed).laplace(0.0, laplace_scale(b, m, eps), size=tuple(cells.shape))
    noisy = (cells + torch.from_numpy(noise)).clamp(0.0, 255.0)
    pixelized = noisy.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)
    return (pixelized / 127.5 - 1.0).to(images.dtype)
