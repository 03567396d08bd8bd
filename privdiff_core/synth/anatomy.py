"""A patient's persistent chest anatomy: the "chest biometrics" every follow-up shares.

Identity is spread over many independent parameters (about 150 numbers per patient): thorax
and lung outline harmonics, diaphragm domes, heart silhouette and tilt, spinal curvature and
vertebral heights, per-rib heights, rise and lateral curl, clavicle angles and bends, the
pulmonary vessel tree, calcified granulomas, and rare marks (pacemaker, sternal wires, a healed
rib fracture). No single parameter identifies a patient; together they do, as in
Packhaeuser et al. (2022), whose verifier the paper uses as its attacker.

Age and sex shift these parameters the way they shift real chests: women have narrower and
shorter thoraces, smaller hearts and breast shadows; with age bone density falls (faster in
women), costal cartilage and the aortic knob calcify, the aorta unfolds, the heart lies more
horizontally, the lungs hyperinflate a little and the thoracic spine curves forward (kyphosis).

Coordinates are patient coordinates (see `geometry`). Side index 0 is the image's left half
(the patient's right), side 1 the image's right half (the patient's left, where the heart is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from privdiff_core.synth.geometry import Array, smooth_noise, splat_segments

SIDE_SIGN = np.array([-1.0, 1.0], dtype=np.float32)  # image direction of each side's lateral wall
N_RIBS = 11  # posterior ribs drawn per side (T1..T11; the lowest hide behind the abdomen)
N_HARMONICS = 4  # outline harmonics k = 2..5
TEXTURE_EXTENT = 1.25  # the vessel/parenchyma layer covers [-extent, extent]^2


@dataclass(frozen=True)
class Marks:
    """Rare, persistent, highly identifying marks (the paper's "surgical implants", fractures)."""

    pacemaker: tuple[float, float] | None  # generator centre (u, v), on the patient's left
    lead_bend: float  # how the pacing lead curves on its way to the heart
    sternal_wires: int  # 0, or 4..6 cerclage wires after sternotomy
    wire_jitter: Array  # (6, 2) per-wire offsets (u, v)
    fracture: tuple[int, int, float] | None  # (side, rib index, position 0..1 along the rib)


@dataclass(frozen=True)
class Anatomy:
    """Every persistent parameter of one patient's chest."""

    age: float
    sex: int  # 0 = M, 1 = F (attributes.SEXES)
    # habitus
    body_width: float
    soft_tissue: float
    shoulder_height: Array  # (2,)
    neck_width: float
    # spine: x(v) = x0 + a1 sin(pi (v+1)/2) + a2 sin(pi (v+1))
    spine_x0: float
    scoliosis: Array  # (2,)
    vertebra_top: float
    vertebra_heights: Array  # (14,) per level, T1 downwards
    # lungs, per side
    lung_cx: Array
    lung_cy: Array
    lung_ax: Array
    lung_ay: Array
    lung_taper: Array
    lung_cos: Array  # (2, N_HARMONICS)
    lung_sin: Array
    # hemidiaphragms, per side
    dome_top: Array
    dome_centre: Array
    dome_width: Array
    dome_depth: Array
    # heart and great vessels
    heart_cx: float
    heart_cy: float
    heart_ax: float
    heart_ay: float
    heart_tilt: float
    heart_cos: Array
    heart_sin: Array
    mediastinum_width: float
    knob_radius: float
    knob_height: float
    aorta_unfold: float
    # ribs, per side and rib
    rib_jitter: Array  # (2, N_RIBS) offset of the rib's spine end from its vertebra
    rib_rise: Array  # (2, N_RIBS)
    rib_curl: Array  # (2, N_RIBS)
    rib_reach: Array  # (2, N_RIBS) lateral extent relative to the lung wall
    rib_thickness: float
    anterior_slope: Array  # (2, N_RIBS)
    # clavicles and shoulder girdle, per side
    clavicle_y: Array
    clavicle_angle: Array
    clavicle_length: Array
    clavicle_bend: Array
    humerus_xy: Array  # (2, 2)
    # age- and sex-driven appearance
    bone_density: float
    calcification: float
    kyphosis: float
    breast_size: float
    breast_drop: float
    cartilage_dots: Array  # (n, 3): side, rib index, position of calcified costal cartilage
    granulomas: Array  # (n, 3): u, v, radius of calcified granulomas
    marks: Marks
    texture: Array  # (T, T) vessel tree + parenchyma, sampled per follow-up

    @property
    def age_factor(self) -> float:
        """0 at 20 years, 1 at 90: how far ageing has gone."""
        return float(np.clip((self.age - 20.0) / 70.0, 0.0, 1.0))


def _sided(rng: np.random.Generator, mean: float, sd: float, asym_sd: float) -> Array:
    """Two side values that share a patient level and differ by a patient-specific asymmetry."""
    level = mean + sd * rng.standard_normal()
    return (level + asym_sd * rng.standard_normal(2)).astype(np.float32)


def sample_anatomy(rng: np.random.Generator, age: float, sex: int, texture_size: int) -> Anatomy:
    """Draw one patient's anatomy. `texture_size` is the resolution of the vessel layer."""
    a = float(np.clip((age - 20.0) / 70.0, 0.0, 1.0))
    female = float(sex == 1)
    n = rng.standard_normal

    body_width = 1.0 - 0.08 * female + 0.06 * n()
    kyphosis = float(np.clip(0.5 * a + 0.12 * n() + 0.1 * a * n(), 0.0, 1.0))
    thorax = 1.0 - 0.07 * female + 0.05 * n()  # overall rib-cage scale
    lung_ax = _sided(rng, 0.32 * thorax, 0.025, 0.02)
    lung_ay = _sided(rng, (0.72 + 0.05 * a - 0.03 * female) * thorax, 0.04, 0.02)
    lung_cx = np.array([-1.0, 1.0], dtype=np.float32) * _sided(rng, 0.43 * thorax, 0.015, 0.01)
    lung_cy = _sided(rng, -0.04 + 0.03 * kyphosis, 0.03, 0.015)
    dome_top = _sided(rng, 0.38 + 0.06 * a - 0.03 * female, 0.05, 0.035)
    dome_top[1] += 0.05  # the left hemidiaphragm sits lower than the liver-backed right one
    heart_scale = float(np.clip(1.0 - 0.07 * female + 0.06 * a + 0.07 * n(), 0.85, 1.2))
    calcification = float(np.clip(a**1.6 * (0.8 + 0.4 * rng.random()) + 0.05 * n(), 0.0, 1.2))
    bone_density = float(np.clip(1.08 - (0.3 + 0.25 * female) * a + 0.06 * n(), 0.4, 1.25))

    n_dots = int(rng.poisson(22 * calcification))
    cartilage_dots = np.column_stack(
        [rng.integers(0, 2, n_dots), rng.integers(1, 9, n_dots), rng.uniform(0.0, 1.0, n_dots)]
    ).astype(np.float32)
    n_gran = int(rng.choice([0, 0, 0, 1, 1, 2, 3]))
    gran = np.column_stack(
        [
            rng.choice([-1.0, 1.0], n_gran) * rng.uniform(0.25, 0.7, n_gran),
            rng.uniform(-0.5, 0.2, n_gran),
            rng.uniform(0.013, 0.024, n_gran),
        ]
    ).astype(np.float32)

    has_pacer = rng.random() < 0.015 + 0.06 * a
    fracture = None
    if rng.random() < 0.05:
        fracture = (int(rng.integers(0, 2)), int(rng.integers(3, 9)), float(rng.uniform(0.45, 0.9)))
    marks = Marks(
        pacemaker=(float(0.42 + 0.08 * n()), float(-0.52 + 0.05 * n())) if has_pacer else None,
        lead_bend=float(rng.uniform(-0.08, 0.08)),
        sternal_wires=int(rng.integers(4, 7)) if rng.random() < 0.01 + 0.05 * a else 0,
        wire_jitter=(rng.standard_normal((6, 2)) * [0.01, 0.012]).astype(np.float32),
        fracture=fracture,
    )

    anatomy = Anatomy(
        age=float(age),
        sex=int(sex),
        body_width=float(body_width),
        soft_tissue=float(np.clip(1.0 + 0.1 * n() - 0.03 * female, 0.75, 1.3)),
        shoulder_height=_sided(rng, -0.86 + 0.04 * female, 0.05, 0.025),
        neck_width=float(0.24 - 0.03 * female + 0.03 * n()),
        spine_x0=float(0.02 * n()),
        scoliosis=(np.array([0.035, 0.02]) * n(2) * (1 + a)).astype(np.float32),
        vertebra_top=float(-0.86 - 0.03 * kyphosis + 0.015 * n()),
        vertebra_heights=(0.112 * thorax * (1 + 0.03 * n()) * (1 + 0.035 * n(14))).astype(np.float32),
        lung_cx=lung_cx.astype(np.float32),
        lung_cy=lung_cy,
        lung_ax=lung_ax,
        lung_ay=lung_ay,
        lung_taper=_sided(rng, 0.28, 0.08, 0.04),
        lung_cos=(0.085 * n((2, N_HARMONICS)) / np.arange(1, N_HARMONICS + 1) ** 0.5).astype(np.float32),
        lung_sin=(0.085 * n((2, N_HARMONICS)) / np.arange(1, N_HARMONICS + 1) ** 0.5).astype(np.float32),
        dome_top=dome_top,
        dome_centre=np.array([-1.0, 1.0], dtype=np.float32) * _sided(rng, 0.42, 0.03, 0.02),
        dome_width=_sided(rng, 0.42, 0.04, 0.03),
        dome_depth=_sided(rng, 0.16, 0.04, 0.025),
        heart_cx=float(0.09 + 0.04 * n()),
        heart_cy=float(0.28 + 0.04 * n()),
        heart_ax=float(0.35 * heart_scale * (1 + 0.06 * n())),
        heart_ay=float(0.28 * heart_scale * (1 + 0.07 * n())),
        heart_tilt=float(np.deg2rad(30 + 10 * a + 9 * n())),
        heart_cos=(0.08 * n(N_HARMONICS) / np.arange(1, N_HARMONICS + 1) ** 0.6).astype(np.float32),
        heart_sin=(0.08 * n(N_HARMONICS) / np.arange(1, N_HARMONICS + 1) ** 0.6).astype(np.float32),
        mediastinum_width=float(0.13 + 0.02 * a + 0.015 * n()),
        knob_radius=float(0.052 + 0.02 * a + 0.012 * n()),
        knob_height=float(-0.36 + 0.04 * n()),
        aorta_unfold=float(np.clip(a * (0.6 + 0.4 * rng.random()) + 0.1 * n(), 0.0, 1.2)),
        rib_jitter=(0.012 * n((2, N_RIBS))).astype(np.float32),
        rib_rise=(0.09 + 0.018 * n() + 0.022 * n((2, N_RIBS))).astype(np.float32),
        rib_curl=(
            (0.24 + 0.1 * kyphosis + 0.03 * n()) * np.linspace(1.5, 0.9, N_RIBS) + 0.035 * n((2, N_RIBS))
        ).astype(np.float32),
        rib_reach=(1.0 + 0.04 * n((2, N_RIBS))).astype(np.float32),
        rib_thickness=float((0.046 + 0.005 * (1 - female) + 0.003 * n()) * thorax),
        anterior_slope=(0.55 + 0.08 * n() + 0.05 * n((2, N_RIBS))).astype(np.float32),
        clavicle_y=_sided(rng, -0.60 - 0.06 * kyphosis, 0.045, 0.03),
        clavicle_angle=np.deg2rad(_sided(rng, 14.0 - 4 * female, 7.0, 4.5)),
        clavicle_length=_sided(rng, 0.66 - 0.04 * female, 0.04, 0.025),
        clavicle_bend=_sided(rng, 1.0, 0.35, 0.25),
        humerus_xy=np.column_stack(
            [np.array([-1.0, 1.0]) * (0.95 - 0.05 * female + 0.03 * n(2)), -0.78 + 0.03 * n(2)]
        ).astype(np.float32),
        bone_density=bone_density,
        calcification=calcification,
        kyphosis=kyphosis,
        breast_size=float(np.clip(0.95 + 0.25 * n(), 0.5, 1.6) if female else 0.0),
        breast_drop=float(0.06 * a + 0.04 * n()) if female else 0.0,
        cartilage_dots=cartilage_dots,
        granulomas=gran,
        marks=marks,
        texture=np.zeros((1, 1), dtype=np.float32),
    )
    return _with_texture(anatomy, rng, texture_size)


def hilum(anatomy: Anatomy, side: int) -> tuple[float, float]:
    """Where one lung's vessels converge (the hilum), in patient coordinates."""
    return (anatomy.spine_x0 + SIDE_SIGN[side] * 0.17, float(anatomy.lung_cy[side]) + 0.04)


def _vessel_tree(anatomy: Anatomy, rng: np.random.Generator, levels: int = 4) -> tuple[Array, ...]:
    """A branching pulmonary vessel tree per lung: segments radiating from each hilum.

    Six trunks per lung fan out from straight up to down-and-out; every segment sprouts two
    thinner, shorter, weaker branches part-way along, for `levels` generations. Angles,
    lengths and branch points are drawn per patient, so the lung markings are individual,
    as real ones are. Returns (p0, p1, width0, width1, weight), one row per segment.
    """
    base = np.tile(np.linspace(-80.0, 70.0, 6), 2)
    sign = np.repeat(SIDE_SIGN, 6)
    phi = np.deg2rad(base + 8.0 * rng.standard_normal(12))
    roots = np.array([hilum(anatomy, s) for s in (0, 1)], dtype=np.float64).repeat(6, axis=0)
    start = roots + np.column_stack([sign * 0.03 * np.cos(phi), 0.08 * np.sin(phi)])
    angle = np.arctan2(np.sin(phi), sign * np.cos(phi))
    lower = base > 20  # lower-lobe vessels are larger (gravity-dependent perfusion)
    length = rng.uniform(0.3, 0.42, 12)
    width = np.where(lower, 0.022, 0.017)
    strength = np.where(lower, 0.15, 0.11)
    segs = []
    for level in range(levels):
        end = start + length[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        segs.append((start, end, width, width * 0.55, strength))
        if level == levels - 1:
            break
        n = len(start) * 2
        at = rng.uniform(0.45, 0.85, n)
        parent = np.repeat(np.arange(len(start)), 2)
        start = start[parent] + at[:, None] * (end - start)[parent]
        angle = angle[parent] + rng.uniform(0.25, 0.6, n) * rng.choice([-1.0, 1.0], n)
        length = length[parent] * rng.uniform(0.45, 0.65, n)
        width = width[parent] * 0.6
        strength = strength[parent] * 0.7
    return tuple(np.concatenate([seg[k] for seg in segs]) for k in range(5))


def _with_texture(anatomy: Anatomy, rng: np.random.Generator, size: int) -> Anatomy:
    """Render the vessel tree, parenchymal mottling and granulomas once per patient."""
    p0, p1, w0, w1, weight = _vessel_tree(anatomy, rng)
    texel = 2 * TEXTURE_EXTENT / size
    # A vessel thinner than a texel would alias: no line narrower than ~0.7 texel.
    tree = splat_segments(
        size, TEXTURE_EXTENT, p0, p1, np.maximum(w0, 0.7 * texel), np.maximum(w1, 0.6 * texel), weight
    )
    # Branches overlap at the hilum: saturate, or the root becomes a bright knot.
    texture = 0.16 * np.tanh(tree / 0.16)
    texture += 0.025 * smooth_noise(rng, size, 14)
    centres = (np.arange(size, dtype=np.float32) + 0.5) * texel - TEXTURE_EXTENT
    for gu, gv, radius in anatomy.granulomas:
        r2 = ((centres[None, :] - gu) ** 2 + (centres[:, None] - gv) ** 2) / max(radius, texel) ** 2
        texture += 0.55 * np.maximum(1.0 - r2, 0.0)
    return replace(anatomy, texture=texture.astype(np.float32))
