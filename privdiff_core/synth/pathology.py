"""The 14 ChestX-ray14 findings, drawn where a radiologist looks for them.

Every name in `attributes.FINDINGS` is rendered, so every label of the synthetic federation is
known (0 or 1, never empty):

| finding | how it looks here |
| --- | --- |
| Cardiomegaly | cardiac silhouette 30-50% larger and more horizontal (cardiothoracic ratio > 0.5) |
| Effusion | fluid filling the costophrenic angle, meniscus rising laterally, dome effaced |
| Pneumothorax | visceral pleural line, no lung markings and extra lucency beyond it |
| Consolidation | dense patchy opacity in one zone with air bronchograms |
| Pneumonia | ill-defined patchy opacity, lower zones favoured |
| Infiltration | hazy, fine-textured opacity over a broad zone |
| Atelectasis | plate-like band in a lower zone, hemidiaphragm raised, mediastinum pulled over |
| Edema | bilateral perihilar haze ("bat wing") with Kerley B lines at the bases |
| Emphysema | flat low diaphragm, hyperlucent lungs, pruned peripheral vessels, bullae |
| Fibrosis | reticular net in the lower and peripheral zones, smaller lungs |
| Pleural_Thickening | smooth band along the lateral chest wall or an apical cap |
| Nodule | round opacity, 5-7.5% of the thorax width |
| Mass | larger lobulated opacity, 11-17% |
| Hernia | retrocardiac mass with an air-fluid level (hiatal hernia) |

A finding's appearance (side, place, size) is drawn once by `sample_finding`; the cohort keeps
it for as long as the finding persists, so a nodule stays where it was across follow-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from privdiff_core.attributes import FINDINGS
from privdiff_core.synth.anatomy import SIDE_SIGN, Anatomy
from privdiff_core.synth.geometry import (
    Array,
    Canvas,
    ball,
    cylinder,
    ellipse_field,
    segments,
    smooth_noise,
    smoothstep,
    soft_step,
)
from privdiff_core.synth.scene import Geometry, Scene, lung_radius, with_changes

BOTH = 2  # `Finding.side` for bilateral findings

# Findings that stay once they appear (structural); the others come and go between films.
CHRONIC: frozenset[str] = frozenset(
    {"Cardiomegaly", "Emphysema", "Fibrosis", "Pleural_Thickening", "Nodule", "Mass", "Hernia"}
)
RENDERED: tuple[str, ...] = FINDINGS  # every finding has a look (see the table above)


@dataclass(frozen=True)
class Finding:
    """One finding's appearance: side, place (patient coordinates), size, severity, texture seed."""

    name: str
    side: int  # 0 (image left = patient right), 1, or BOTH
    centre: tuple[float, float]
    size: float
    severity: float  # 0..1
    seed: int  # texture of patchy opacities

    def sides(self) -> tuple[int, ...]:
        return (0, 1) if self.side == BOTH else (self.side,)


def _in_lung(anatomy: Anatomy, side: int, lateral: float, height: float) -> tuple[float, float]:
    """A point of one lung from its lateral fraction (0 medial .. 1 wall) and height (-1 apex .. 1 base)."""
    sign = SIDE_SIGN[side]
    width = anatomy.lung_ax[side] * (1 + anatomy.lung_taper[side] * height)
    u = anatomy.lung_cx[side] + sign * (lateral - 0.45) * 1.6 * width * np.sqrt(
        max(0.0, 1 - 0.55 * height**2)
    )
    v = anatomy.lung_cy[side] + height * anatomy.lung_ay[side]
    return float(u), float(v)


def sample_finding(name: str, rng: np.random.Generator, anatomy: Anatomy) -> Finding:
    """Draw the appearance of one finding for this patient."""
    if name not in FINDINGS:
        raise ValueError(f"unknown finding {name!r}; choose from {', '.join(FINDINGS)}")
    side = int(rng.integers(0, 2))
    severity = float(rng.uniform(0.0, 1.0))
    seed = int(rng.integers(0, 2**31 - 1))
    centre = (0.0, 0.0)
    size = 0.0
    if name in ("Nodule", "Mass", "Consolidation", "Pneumonia", "Infiltration"):
        lower = name in ("Pneumonia", "Infiltration")
        height = rng.uniform(-0.1, 0.45) if lower else rng.uniform(-0.65, 0.35)
        lateral = rng.uniform(0.35, 0.8)
        if side == 1 and height > 0.0:  # keep left-lower lesions lateral of the heart
            lateral = max(lateral, 0.65)
        centre = _in_lung(anatomy, side, lateral, height)
        size = {
            "Nodule": rng.uniform(0.05, 0.075),
            "Mass": rng.uniform(0.11, 0.17),
            "Consolidation": rng.uniform(0.13, 0.2),
            "Pneumonia": rng.uniform(0.16, 0.25),
            "Infiltration": rng.uniform(0.2, 0.3),
        }[name]
    elif name == "Atelectasis":
        centre = _in_lung(anatomy, side, rng.uniform(0.4, 0.65), rng.uniform(0.05, 0.3))
        size = rng.uniform(0.26, 0.38)
    elif name == "Effusion":
        side = BOTH if rng.random() < 0.3 else side
        size = rng.uniform(0.2, 0.38)
    elif name == "Pneumothorax":
        size = rng.uniform(0.24, 0.4)
    elif name in ("Edema", "Emphysema", "Fibrosis"):
        side = BOTH
    elif name == "Pleural_Thickening":
        side = BOTH if rng.random() < 0.3 else side
        size = rng.uniform(0.04, 0.065)
        centre = (0.0, float(rng.choice([-1.0, 1.0])))  # v > 0: lateral wall; v < 0: apical cap
    elif name == "Hernia":
        size = rng.uniform(0.11, 0.15)
    return Finding(name=name, side=side, centre=centre, size=float(size), severity=severity, seed=seed)


def adjust_geometry(g: Geometry, anatomy: Anatomy, findings: Mapping[str, Finding]) -> Geometry:
    """Findings that change the shape of the chest rather than add an opacity."""
    if "Cardiomegaly" in findings:
        # The enlarged heart widens to the left and lies more horizontally: its widest part
        # stays above the diaphragm, where the cardiothoracic ratio is measured.
        grow = 1.3 + 0.2 * findings["Cardiomegaly"].severity
        g = with_changes(
            g,
            heart_ax=g.heart_ax * grow,
            heart_ay=g.heart_ay * (1 + 0.7 * (grow - 1)),
            heart_tilt=g.heart_tilt * 0.6,
            heart_cy=g.heart_cy - 0.03,
            heart_cx=g.heart_cx + 0.06 * (grow - 1),
        )
    if "Emphysema" in findings:
        s = findings["Emphysema"].severity
        g = with_changes(
            g,
            dome_top=g.dome_top + 0.07 + 0.04 * s,
            dome_depth=g.dome_depth * (0.5 - 0.25 * s),
            lung_ay=g.lung_ay * (1.05 + 0.04 * s),
            lung_cy=g.lung_cy + 0.03,
            air=g.air * (1.12 + 0.08 * s),
            heart_ax=g.heart_ax * 0.9,
        )
    if "Fibrosis" in findings:
        s = findings["Fibrosis"].severity
        g = with_changes(g, dome_top=g.dome_top - 0.04 - 0.03 * s, lung_ay=g.lung_ay * (0.96 - 0.02 * s))
    if "Atelectasis" in findings:
        f = findings["Atelectasis"]
        dome = g.dome_top.copy()
        dome[f.side] -= 0.05 + 0.04 * f.severity
        g = with_changes(g, dome_top=dome, mediastinal_shift=g.mediastinal_shift + SIDE_SIGN[f.side] * 0.015)
    return g


def _collapsed_lung(scene: Scene, finding: Finding) -> Array:
    """Normalised radius of a lung shrunk towards its medial base by a pneumothorax."""
    side = finding.side
    g = scene.geometry
    anchor_u, anchor_v = scene.hila[side][0], float(g.dome_top[side])
    keep = 1.0 - finding.size
    canvas = scene.canvas
    shrunk = Canvas(
        u=(anchor_u + (canvas.u - anchor_u) / keep).astype(np.float32),
        v=(anchor_v + (canvas.v - anchor_v) / keep).astype(np.float32),
        pixel=canvas.pixel / keep,
    )
    return lung_radius(scene.anatomy, g, shrunk, side)


def vessel_mask(scene: Scene, findings: Mapping[str, Finding]) -> Array:
    """Where lung markings show: aerated lung, minus a pneumothorax rim, pruned by emphysema."""
    mask = [scene.lung[0].copy(), scene.lung[1].copy()]
    if "Pneumothorax" in findings:
        f = findings["Pneumothorax"]
        collapsed = _collapsed_lung(scene, f)
        mask[f.side] *= soft_step((1.0 - collapsed) * 0.3, scene.canvas.pixel)
    out = mask[0] + mask[1]
    if "Emphysema" in findings:
        rho = np.minimum(scene.lung_radius[0], scene.lung_radius[1])
        out *= 1.0 - (0.5 + 0.3 * findings["Emphysema"].severity) * np.clip(rho, 0, 1) ** 2
    return out


def _patch(scene: Scene, f: Finding, sharpness: float, cells: int) -> Array:
    """A patchy opacity: a random field cut by an elliptical envelope around the lesion."""
    u, v = scene.canvas.u, scene.canvas.v
    rng = np.random.default_rng(f.seed)
    field = smooth_noise(rng, scene.canvas.size, cells)
    rho = ellipse_field(u, v, f.centre[0], f.centre[1], f.size * 1.15, f.size)
    return smoothstep((0.9 + 0.6 * field - 1.6 * rho**2) * sharpness + 0.5)


def draw_findings(scene: Scene, findings: Mapping[str, Finding]) -> Array:
    """Sum of every finding's attenuation on this film."""
    out = np.zeros_like(scene.canvas.u)
    for name in FINDINGS:  # fixed order: the same findings always draw the same way
        if name in findings:
            out += _DRAW[name](scene, findings[name])
    return out


def _lung_of(scene: Scene, side: int) -> Array:
    return scene.lung[0] + scene.lung[1] if side == BOTH else scene.lung[side]


def _nodule(scene: Scene, f: Finding) -> Array:
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    return 0.5 * ball(u, v, f.centre[0], f.centre[1], max(f.size, 1.2 * px), px)


def _mass(scene: Scene, f: Finding) -> Array:
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    rng = np.random.default_rng(f.seed)
    out = 0.5 * ball(u, v, f.centre[0], f.centre[1], f.size, px)
    for _ in range(3):  # lobulation: smaller lobes on the margin
        angle = rng.uniform(0, 2 * np.pi)
        du, dv = 0.6 * f.size * np.cos(angle), 0.6 * f.size * np.sin(angle)
        out = np.maximum(out, 0.42 * ball(u, v, f.centre[0] + du, f.centre[1] + dv, 0.55 * f.size, px))
    return out


def _consolidation(scene: Scene, f: Finding) -> Array:
    u, v = scene.canvas.u, scene.canvas.v
    patch = _patch(scene, f, 3.0, 9) * _lung_of(scene, f.side)
    # Air bronchograms: branching air-filled bronchi seen against the opacity.
    rng = np.random.default_rng(f.seed + 1)
    hx, hy = scene.hila[f.side]
    p0, p1 = [], []
    for _ in range(4):
        a0 = np.arctan2(f.centre[1] - hy, f.centre[0] - hx) + rng.normal(0, 0.35)
        start = (f.centre[0] - 0.9 * f.size * np.cos(a0), f.centre[1] - 0.9 * f.size * np.sin(a0))
        end = (start[0] + 1.6 * f.size * np.cos(a0), start[1] + 1.6 * f.size * np.sin(a0))
        p0.append(start)
        p1.append(end)
    width = max(0.009, 0.6 * scene.canvas.pixel)
    tubes = segments(u, v, np.array(p0), np.array(p1), np.full(4, width), np.full(4, width * 0.6), np.ones(4))
    return (0.42 + 0.1 * f.severity) * patch - 0.2 * np.clip(tubes, 0, 1) * patch


def _pneumonia(scene: Scene, f: Finding) -> Array:
    return (0.3 + 0.12 * f.severity) * _patch(scene, f, 1.2, 7) * _lung_of(scene, f.side)


def _infiltration(scene: Scene, f: Finding) -> Array:
    rng = np.random.default_rng(f.seed)
    fine = smooth_noise(rng, scene.canvas.size, max(8, scene.canvas.size // 5))
    envelope = np.exp(-(ellipse_field(scene.canvas.u, scene.canvas.v, *f.centre, f.size * 1.3, f.size) ** 2))
    return (0.2 + 0.1 * f.severity) * envelope * (1.0 + 0.6 * fine) * _lung_of(scene, f.side)


def _atelectasis(scene: Scene, f: Finding) -> Array:
    u, v = scene.canvas.u, scene.canvas.v
    rng = np.random.default_rng(f.seed)
    tilt = np.deg2rad(rng.uniform(-20, 20)) * SIDE_SIGN[f.side]
    half = f.size / 2
    p0 = np.array([[f.centre[0] - half * np.cos(tilt), f.centre[1] - half * np.sin(tilt)]])
    p1 = np.array([[f.centre[0] + half * np.cos(tilt), f.centre[1] + half * np.sin(tilt)]])
    width = np.array([max(0.03 + 0.02 * f.severity, scene.canvas.pixel)])
    band = segments(u, v, p0, p1, width, width * 0.7, np.ones(1))
    return 0.45 * band * scene.lung_outline[f.side]


def _edema(scene: Scene, f: Finding) -> Array:
    u, v = scene.canvas.u, scene.canvas.v
    out = np.zeros_like(u)
    lungs = scene.lung[0] + scene.lung[1]
    rng = np.random.default_rng(f.seed)
    for side in (0, 1):
        hx, hy = scene.hila[side]
        out += (0.2 + 0.12 * f.severity) * np.exp(-(((u - hx) / 0.28) ** 2 + ((v - hy) / 0.24) ** 2))
        # Kerley B lines: short horizontal septal lines at the lateral bases.
        base = float(scene.geometry.dome_top[side])
        wall = scene.geometry.lung_cx[side] + SIDE_SIGN[side] * scene.geometry.lung_ax[side] * 1.1
        n = 7
        ys = base - rng.uniform(0.03, 0.2, n)
        x_in = wall - SIDE_SIGN[side] * rng.uniform(0.0, 0.04, n)
        x_out = x_in - SIDE_SIGN[side] * 0.07
        width = np.full(n, max(0.006, 0.5 * scene.canvas.pixel))
        out += 0.22 * segments(
            u, v, np.column_stack([x_in, ys]), np.column_stack([x_out, ys]), width, width, np.ones(n)
        )
    return out * lungs


def _emphysema(scene: Scene, f: Finding) -> Array:
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    rng = np.random.default_rng(f.seed)
    out = np.zeros_like(u)
    a = scene.anatomy
    for _ in range(1 + int(f.severity > 0.5)):  # apical bullae: lucent, thin-walled
        side = int(rng.integers(0, 2))
        cu, cv = _in_lung(a, side, rng.uniform(0.45, 0.75), rng.uniform(-0.7, -0.35))
        radius = rng.uniform(0.07, 0.11)
        r = np.hypot(u - cu, v - cv)
        out += (
            -0.14 * cylinder(r / radius) + 0.05 * np.exp(-(((r - radius) / max(0.008, px * 0.6)) ** 2))
        ) * scene.lung[side]
    return out


def _fibrosis(scene: Scene, f: Finding) -> Array:
    rng = np.random.default_rng(f.seed)
    field = smooth_noise(rng, scene.canvas.size, max(10, scene.canvas.size // 4))
    net = np.exp(-((field / 0.35) ** 2))  # the zero set of a random field: a reticular web
    out = np.zeros_like(field)
    for side in (0, 1):
        rho = scene.lung_radius[side]
        lower = smoothstep((scene.canvas.v - scene.geometry.lung_cy[side] + 0.1) / 0.4)
        peripheral = smoothstep((rho - 0.45) / 0.4)
        out += (0.28 + 0.12 * f.severity) * net * lower * peripheral * scene.lung[side]
    return out


def _pleural_thickening(scene: Scene, f: Finding) -> Array:
    out = np.zeros_like(scene.canvas.u)
    v = scene.canvas.v
    for side in f.sides():
        rho = scene.lung_radius[side]
        rim = f.size / float(scene.geometry.lung_ax[side])
        band = smoothstep((rho - 1.0 + rim) / (0.4 * rim)) * scene.lung_outline[side]
        apex, _ = scene.lung_height(side)
        if f.centre[1] > 0:  # lateral wall, mid and lower zones
            where = smoothstep((v - apex - 0.45) / 0.2) * (
                (scene.canvas.u - scene.spine_x) * SIDE_SIGN[side] > 0.3
            )
        else:  # apical cap
            where = 1.0 - smoothstep((v - apex - 0.15) / 0.1)
        out += 0.38 * band * where
    return out


def _pneumothorax(scene: Scene, f: Finding) -> Array:
    collapsed = _collapsed_lung(scene, f)
    lung = scene.lung[f.side]
    pixel = scene.canvas.pixel
    rim_region = lung * soft_step((collapsed - 1.0) * 0.3, pixel)
    pleura = np.exp(-((((collapsed - 1.0) * 0.3) / max(0.006, 0.6 * pixel)) ** 2)) * lung
    inside = lung * soft_step((1.0 - collapsed) * 0.3, pixel)
    return -0.16 * rim_region + 0.16 * pleura + 0.12 * inside


def _effusion(scene: Scene, f: Finding) -> Array:
    u, v = scene.canvas.u, scene.canvas.v
    g = scene.geometry
    out = np.zeros_like(u)
    for side in f.sides():
        sign = SIDE_SIGN[side]
        reach = np.abs(g.lung_cx[side]) + g.lung_ax[side] * 1.2
        lateral = np.clip((u - scene.spine_x) * sign / reach, 0.0, 1.0)
        # The fluid collects in the lowest point of the lung, the costophrenic sulcus, and
        # climbs the lateral wall (meniscus).
        lung_here = scene.lung[side] > 0.5
        sulcus = float(scene.dome[lung_here].max()) if lung_here.any() else float(g.dome_top[side])
        level = sulcus - f.size * (1.0 + f.severity * 0.5) * (0.7 + 0.5 * lateral**1.5)
        # Fluid replaces the air it displaces (and a little more): the dome and the
        # costophrenic angle vanish under it.
        fluid = smoothstep((v - level) / 0.06) * scene.lung[side]
        aeration = g.air * cylinder(np.minimum(scene.lung_radius[side], 1.0)) ** 0.5
        out += fluid * (0.95 * aeration + 0.1)
    return out


def _hernia(scene: Scene, f: Finding) -> Array:
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    cx = float(scene.spine_x.mean()) + 0.06
    cy = float(scene.geometry.dome_top[1]) - 0.5 * f.size
    sac = ball(u, v, cx, cy, f.size, px)
    inside = soft_step(f.size - np.hypot(u - cx, v - cy), px)
    gas = inside * soft_step(cy - 0.15 * f.size - v, px)  # air above a flat fluid level
    rim = np.exp(-(((np.hypot(u - cx, v - cy) - f.size) / max(0.008, 0.6 * px)) ** 2))
    return 0.16 * sac - 0.32 * gas * cylinder(np.hypot(u - cx, v - cy) / f.size) ** 0.3 + 0.08 * rim


def _cardiomegaly(scene: Scene, f: Finding) -> Array:
    # The enlargement itself is a change of geometry (see adjust_geometry): nothing to add.
    return np.zeros_like(scene.canvas.u)


_DRAW = {
    "Atelectasis": _atelectasis,
    "Cardiomegaly": _cardiomegaly,
    "Effusion": _effusion,
    "Infiltration": _infiltration,
    "Mass": _mass,
    "Nodule": _nodule,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Emphysema": _emphysema,
    "Fibrosis": _fibrosis,
    "Pleural_Thickening": _pleural_thickening,
    "Hernia": _hernia,
}
assert set(_DRAW) == set(FINDINGS)
