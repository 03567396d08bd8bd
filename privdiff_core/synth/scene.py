"""The geometry of one examination: anatomy + follow-up (+ findings) -> masks on the canvas.

`Geometry` holds the shape parameters as this film sees them (breath, AP magnification and
findings such as cardiomegaly or emphysema change them); `build_scene` evaluates the lung,
heart and diaphragm fields on the canvas once, so the anatomy layers and the findings draw
against the same outlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from privdiff_core.synth.anatomy import SIDE_SIGN, Anatomy, hilum
from privdiff_core.synth.followup import FollowUp
from privdiff_core.synth.geometry import Array, Canvas, ellipse_field, harmonic_radius, soft_step


@dataclass(frozen=True)
class Geometry:
    """Shape parameters in effect for one film."""

    lung_cx: Array
    lung_cy: Array
    lung_ax: Array
    lung_ay: Array
    dome_top: Array
    dome_depth: Array
    heart_cx: float
    heart_cy: float
    heart_ax: float
    heart_ay: float
    heart_tilt: float
    mediastinum_width: float
    mediastinal_shift: float  # the mediastinum pulled towards a collapsed lung (atelectasis)
    spine_offset: float  # spinous processes off the midline when the patient is turned
    rib_spread: float  # interspaces widen on deep inspiration
    rib_lift: float  # lateral rib ends rise on inspiration (bucket-handle motion)
    air: float  # lucency of the aerated lung
    vessel_gain: Array = field(default_factory=lambda: np.ones(2, dtype=np.float32))
    clavicle_lift: float = 0.0
    scapula_x: Array = field(default_factory=lambda: np.array([-0.92, 0.92], dtype=np.float32))


def base_geometry(anatomy: Anatomy, followup: FollowUp) -> Geometry:
    """Anatomy as this examination sees it: breath depth, AP magnification, rotation."""
    breath = followup.inspiration
    ap = followup.view == "AP"
    heart_mag = 1.12 if ap else 1.0  # the heart is anterior: far from an AP film, magnified
    scap = 0.72 + 0.2 * followup.scapula_out
    return Geometry(
        lung_cx=anatomy.lung_cx.copy(),
        lung_cy=anatomy.lung_cy + 0.035 * breath,
        lung_ax=anatomy.lung_ax * (1 + 0.02 * breath),
        lung_ay=anatomy.lung_ay * (1 + 0.055 * breath),
        dome_top=anatomy.dome_top + 0.07 * breath,
        dome_depth=anatomy.dome_depth * (1 - 0.15 * breath),
        heart_cx=anatomy.heart_cx,
        heart_cy=anatomy.heart_cy + 0.03 * breath,
        heart_ax=anatomy.heart_ax * heart_mag * (1 - 0.035 * breath),
        heart_ay=anatomy.heart_ay * heart_mag,
        heart_tilt=anatomy.heart_tilt - 0.05 * breath,
        mediastinum_width=anatomy.mediastinum_width * (1.1 if ap else 1.0),
        mediastinal_shift=0.0,
        spine_offset=0.035 * followup.axial_rotation,
        rib_spread=1.0 + 0.03 * breath,
        rib_lift=0.3 * breath,
        air=0.55 + 0.04 * breath,
        clavicle_lift=0.05 if ap else 0.0,
        scapula_x=np.array([-scap, scap], dtype=np.float32),
    )


@dataclass
class Scene:
    """Fields of one film on its canvas, shared by the anatomy layers and the findings."""

    canvas: Canvas
    anatomy: Anatomy
    geometry: Geometry
    spine_x: Array  # centre of the vertebral column at each pixel's height
    lung_radius: list[Array]  # per side: normalised radius of the lung outline (<1 inside)
    lung_outline: list[Array]  # per side: soft mask of the whole lung outline (ignores cuts)
    lung: list[Array]  # per side: aerated lung (outline minus mediastinum, above the dome)
    dome: Array  # height v of the diaphragm under each pixel
    heart: Array  # soft mask of the cardiac silhouette
    heart_radius: Array  # normalised radius of the heart outline
    mediastinum: Array  # soft mask of mediastinum + heart
    hila: list[tuple[float, float]]

    def lung_height(self, side: int) -> tuple[float, float]:
        """Apex and base (v) of one lung in this film."""
        g = self.geometry
        return float(g.lung_cy[side] - g.lung_ay[side]), float(g.dome_top[side])


def spine_centre(anatomy: Anatomy, v: Array, offset: float = 0.0) -> Array:
    """x of the vertebral column at height v: the patient's own scoliosis curve."""
    a1, a2 = anatomy.scoliosis
    phase = np.pi * (v + 1.0)
    return anatomy.spine_x0 + offset + a1 * np.sin(0.5 * phase) + a2 * np.sin(phase)


def dome_height(anatomy: Anatomy, geometry: Geometry, u: Array, side: int) -> Array:
    """Hemidiaphragm: a dome whose lateral end dives into the costophrenic sulcus."""
    x = (u - anatomy.dome_centre[side]) / anatomy.dome_width[side]
    return (
        geometry.dome_top[side]
        + geometry.dome_depth[side] * x * x
        + 0.09 * np.clip(x * SIDE_SIGN[side], 0, None) ** 6
    )


def lung_radius(anatomy: Anatomy, g: Geometry, canvas: Canvas, side: int) -> Array:
    """Normalised radius of one lung's outline: a tapered super-ellipse with harmonics."""
    sign = SIDE_SIGN[side]
    y = (canvas.v - g.lung_cy[side]) / g.lung_ay[side]
    # Wider at the base than at the apex, as the rib cage is.
    half_width = g.lung_ax[side] * (1.0 + anatomy.lung_taper[side] * np.clip(y, -1.2, 1.2))
    x = sign * (canvas.u - g.lung_cx[side] - sign * g.mediastinal_shift * 0.3) / half_width
    # Rounded apex (y < 0), boxy base (y > 0): the lung is widest at the costophrenic angle.
    rho = (np.abs(x) ** 2.2 + np.abs(y) ** np.where(y > 0, 4.0, 2.2)) ** (1 / 2.2)
    theta = np.arctan2(y, x)
    return rho / harmonic_radius(theta, anatomy.lung_cos[side], anatomy.lung_sin[side])


def build_scene(anatomy: Anatomy, geometry: Geometry, canvas: Canvas) -> Scene:
    """Evaluate every outline of this film on the canvas."""
    u, v, px = canvas.u, canvas.v, canvas.pixel
    g = geometry
    spine = spine_centre(anatomy, v, g.spine_offset * 0.3) + g.mediastinal_shift
    # Mediastinum: a central band (widening downwards) plus the heart and the aortic knob.
    width = g.mediastinum_width * (1.0 + 0.5 * np.clip(v + 0.3, 0, None))
    band = soft_step(width - np.abs(u - spine - 0.01), px)
    hx = spine_centre(anatomy, np.float32(g.heart_cy)) + g.heart_cx + g.mediastinal_shift
    rho_h = ellipse_field(u, v, hx, g.heart_cy, g.heart_ax, g.heart_ay, g.heart_tilt)
    theta_h = np.arctan2(v - g.heart_cy, u - hx)
    heart_r = rho_h / harmonic_radius(theta_h, anatomy.heart_cos, anatomy.heart_sin)
    heart = soft_step((1.0 - heart_r) * g.heart_ax, px)
    knob_x = anatomy.spine_x0 + g.mediastinal_shift + 0.075 + 0.05 * anatomy.aorta_unfold
    knob = soft_step(anatomy.knob_radius - np.hypot(u - knob_x, v - anatomy.knob_height), px)
    mediastinum = np.maximum(np.maximum(band, heart), knob)

    dome = np.where(u < spine, dome_height(anatomy, g, u, 0), dome_height(anatomy, g, u, 1))
    above = soft_step(dome - v, px)
    radii, outlines, lungs = [], [], []
    for side in (0, 1):
        rho = lung_radius(anatomy, g, canvas, side)
        outline = soft_step((1.0 - rho) * g.lung_ax[side], px)
        lateral = (u - spine) * SIDE_SIGN[side] > 0
        radii.append(rho)
        outlines.append(outline)
        lungs.append(outline * above * (1.0 - mediastinum) * lateral)
    hila = [hilum(anatomy, s) for s in (0, 1)]
    hila = [
        (h[0] + g.mediastinal_shift, h[1] + 0.03 * (g.lung_cy[s] - anatomy.lung_cy[s]))
        for s, h in enumerate(hila)
    ]
    return Scene(
        canvas=canvas,
        anatomy=anatomy,
        geometry=g,
        spine_x=spine,
        lung_radius=radii,
        lung_outline=outlines,
        lung=lungs,
        dome=dome,
        heart=heart,
        heart_radius=heart_r,
        mediastinum=mediastinum,
        hila=hila,
    )


def with_changes(geometry: Geometry, **changes) -> Geometry:
    """A copy of `geometry` with some fields replaced (used by findings)."""
    return replace(geometry, **changes)
