"""From attenuation to what a site's detector and processing deliver (display values in [0, 1]).

The chain follows a digital radiograph: exposure (contrast and dose of this film), detector
unsharpness, the vendor's sigmoid display curve and gamma, edge enhancement (unsharp mask),
quantum noise (stronger where few photons arrive, i.e. bright areas), collimator shutters and
the lead side marker. Output is MONOCHROME2 sense: bone and soft tissue bright, air dark.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from privdiff_core.synth.followup import FollowUp
from privdiff_core.synth.geometry import Array
from privdiff_core.synth.sites import SiteProfile

NOISE_REFERENCE_SIZE = 1024  # image side at which `SiteProfile.noise` is specified
SHUTTER_JITTER = 0.006  # film-to-film variation of each collimator border (image fraction)


def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def acquire(density: Array, site: SiteProfile, followup: FollowUp, rng: np.random.Generator) -> Array:
    """The film a site's scanner makes of `density`, as float32 display values in [0, 1]."""
    size = density.shape[0]
    pixels_per_unit = size / 2.0
    d = density * followup.exposure + followup.brightness
    sigma = site.blur * pixels_per_unit
    if sigma > 0.25:
        d = ndimage.gaussian_filter(d, sigma, mode="nearest")
    floor = _sigmoid(-site.lut_centre * site.lut_contrast)
    y = (_sigmoid((d - site.lut_centre) * site.lut_contrast) - floor) / (1.0 - floor)
    y = np.clip(y, 0.0, 1.0) ** site.gamma
    if site.edge_enhance > 0:
        y = y + site.edge_enhance * (y - ndimage.gaussian_filter(y, 0.04 * pixels_per_unit, mode="nearest"))
    # Quantum noise: fewer photons reach the detector under bone and mediastinum (bright). The
    # site's level is that of a 1024-pixel film; a smaller film averages detector pixels and its
    # noise falls (by sqrt of the size ratio: detector noise is spatially correlated).
    sigma_noise = site.noise * followup.noise * np.sqrt(size / NOISE_REFERENCE_SIZE)
    y = y + sigma_noise * (0.4 + y) * rng.standard_normal(y.shape).astype(np.float32)
    y = np.clip(y, 0.0, 1.0)
    _shutters(y, site, rng)
    _marker(y, site)
    return y.astype(np.float32)


def _shutters(image: Array, site: SiteProfile, rng: np.random.Generator) -> None:
    """Collimator borders, blacked out by the vendor's processing, width varying from film to film."""
    size = image.shape[0]
    widths = [
        max(0.0, w + (SHUTTER_JITTER * rng.standard_normal() if w > 0 else 0.0)) for w in site.collimation
    ]
    top, bottom, left, right = (int(round(w * size)) for w in widths)
    if top:
        image[:top] = 0.0
    if bottom:
        image[size - bottom :] = 0.0
    if left:
        image[:, :left] = 0.0
    if right:
        image[:, size - right :] = 0.0


def _marker(image: Array, site: SiteProfile) -> None:
    """A bright lead letter near a top corner (L on the patient's left, image right)."""
    if not site.marker:
        return
    size = image.shape[0]
    h = max(4, size // 16)
    w = max(3, (2 * h) // 3)
    stroke = max(1, h // 5)
    top = int(round((site.collimation[0] + 0.04) * size))
    if site.marker == "L":
        left = size - int(round((site.collimation[3] + 0.05) * size)) - w
        image[top : top + h, left : left + stroke] = 1.0
        image[top + h - stroke : top + h, left : left + w] = 1.0
    else:  # "R", drawn as a block letter: stem, bowl and leg
        left = int(round((site.collimation[2] + 0.05) * size))
        image[top : top + h, left : left + stroke] = 1.0
        image[top : top + stroke, left : left + w] = 1.0
        image[top + h // 2 : top + h // 2 + stroke, left : left + w] = 1.0
        image[top : top + h // 2, left + w - stroke : left + w] = 1.0
        for k in range(h - h // 2):
            col = left + stroke + (k * (w - stroke)) // max(1, h - h // 2)
            image[top + h // 2 + k, col : col + stroke] = 1.0
