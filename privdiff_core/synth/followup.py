"""How one examination differs from the patient's others: positioning, breath, exposure.

Real follow-ups of one patient are never the same picture: the patient stands a little higher
or turned, breathes in more or less, the technologist picks another exposure, and in the
intensive care unit the film is taken AP with ECG electrodes on the chest. These are the
nuisances a re-identification attacker must see through; their sizes follow what radiographers
accept as a diagnostic frontal film (rotation of a few degrees, inspiration +- one rib space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privdiff_core.synth.geometry import Array


@dataclass(frozen=True)
class FollowUp:
    """Everything that changes between two examinations of the same patient."""

    view: str  # "PA" (standing, film in front) or "AP" (bedside, film behind: heart magnified)
    shift: tuple[float, float]  # patient position in the field, image units
    rotation_deg: float  # in-plane tilt of the patient
    magnification: float  # source-to-image distance and patient size in the field
    inspiration: float  # -1 shallow breath .. +1 deep breath
    axial_rotation: float  # -1..1: patient turned; spinous processes off the midline
    scapula_out: float  # 1: scapulae rotated out of the lung fields (good PA); 0: over them (AP)
    exposure: float  # contrast (kVp): multiplies the attenuation
    brightness: float  # density offset (mAs, processing)
    noise: float  # multiplies the site's detector noise
    electrodes: Array  # (n, 2): ECG electrodes on the chest (bedside films)


def sample_followup(rng: np.random.Generator, ap_fraction: float, electrode_rate: float) -> FollowUp:
    """Draw one examination's circumstances. Bedside (AP) films are shallower and less tidy."""
    ap = rng.random() < ap_fraction
    spread = 1.4 if ap else 1.0
    n = rng.standard_normal
    n_electrodes = int(rng.integers(3, 6)) if (ap and rng.random() < electrode_rate) else 0
    electrodes = np.column_stack(
        [rng.uniform(-0.75, 0.75, n_electrodes), rng.uniform(-0.7, 0.35, n_electrodes)]
    ).astype(np.float32)
    return FollowUp(
        view="AP" if ap else "PA",
        shift=(
            float(np.clip(0.025 * spread * n(), -0.07, 0.07)),
            float(np.clip(0.03 * spread * n(), -0.08, 0.08)),
        ),
        rotation_deg=float(np.clip(1.5 * spread * n(), -4.5, 4.5)),
        magnification=float(np.clip(1.0 + 0.025 * n() + (0.03 if ap else 0.0), 0.93, 1.1)),
        inspiration=float(np.clip(0.35 * n() - (0.45 if ap else 0.0), -1.0, 1.0)),
        axial_rotation=float(np.clip(0.35 * spread * n(), -1.0, 1.0)),
        scapula_out=float(np.clip((0.15 if ap else 0.8) + 0.15 * n(), 0.0, 1.0)),
        exposure=float(np.clip(1.0 + 0.07 * n(), 0.85, 1.15)),
        brightness=float(np.clip(0.05 * n(), -0.12, 0.12)),
        noise=float(rng.uniform(0.75, 1.3)),
        electrodes=electrodes,
    )
