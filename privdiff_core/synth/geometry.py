"""Vectorised drawing primitives on a grid of patient coordinates.

Everything is drawn in *patient coordinates* (u, v): u runs from the image's left edge (the
patient's right side on a frontal view) at -1 to its right edge at +1, v from the top (-1) to
the bottom (+1). A follow-up's position, rotation and magnification are an affine map from
pixel centres to (u, v) (`Canvas.for_pose`), so anatomy is evaluated exactly where each pixel
looks, at any image size, with no resampling and no per-pixel Python loop.

Shapes are drawn with soft edges one pixel wide (`soft_step`), which anti-aliases them at small
sizes (a 64x64 rib is two pixels thick) and keeps them sharp at large ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

Array = np.ndarray


@dataclass(frozen=True)
class Canvas:
    """Patient coordinates of every pixel centre of an S x S image."""

    u: Array  # (S, S) float32
    v: Array  # (S, S) float32
    pixel: float  # width of one pixel in patient units: the anti-aliasing scale

    @property
    def size(self) -> int:
        return self.u.shape[0]

    @cached_property
    def _extents(self) -> tuple[Array, Array, Array, Array, bool]:
        vlo, vhi = self.v.min(axis=1), self.v.max(axis=1)
        ulo, uhi = self.u.min(axis=0), self.u.max(axis=0)
        # Rows climb in v and columns in u unless the pose is rotated by 45 degrees or more.
        monotonic = all(bool(np.all(np.diff(x) >= 0)) for x in (vlo, vhi, ulo, uhi))
        return vlo, vhi, ulo, uhi, monotonic

    def window(self, umin: float, umax: float, vmin: float, vmax: float) -> tuple[slice, slice]:
        """Rows and columns of every pixel that may look at the box [umin, umax] x [vmin, vmax].

        Drawing a small shape only inside its window keeps the cost proportional to its area.
        """
        vlo, vhi, ulo, uhi, monotonic = self._extents
        if monotonic:
            rows = slice(int(np.searchsorted(vhi, vmin)), int(np.searchsorted(vlo, vmax, side="right")))
            cols = slice(int(np.searchsorted(uhi, umin)), int(np.searchsorted(ulo, umax, side="right")))
            return rows, cols
        r = np.flatnonzero((vhi >= vmin) & (vlo <= vmax))
        c = np.flatnonzero((uhi >= umin) & (ulo <= umax))
        if len(r) == 0 or len(c) == 0:
            return slice(0, 0), slice(0, 0)
        return slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)

    def windows(self, umin: Array, umax: Array, vmin: Array, vmax: Array) -> list[tuple[slice, slice]]:
        """`window` for many boxes at once (one search per bound instead of one per box)."""
        vlo, vhi, ulo, uhi, monotonic = self._extents
        if not monotonic:
            return [self.window(*box) for box in zip(umin, umax, vmin, vmax, strict=True)]
        r0, r1 = vhi.searchsorted(vmin).tolist(), vlo.searchsorted(vmax, side="right").tolist()
        c0, c1 = uhi.searchsorted(umin).tolist(), ulo.searchsorted(umax, side="right").tolist()
        return [(slice(a, b), slice(c, d)) for a, b, c, d in zip(r0, r1, c0, c1, strict=True)]

    @classmethod
    def for_pose(
        cls,
        size: int,
        shift: tuple[float, float] = (0.0, 0.0),
        rotation_deg: float = 0.0,
        magnification: float = 1.0,
    ) -> Canvas:
        """The patient coordinates seen by each pixel when the patient is shifted by `shift`
        (image units), rotated by `rotation_deg` (clockwise on screen) and magnified."""
        centres = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
        y, x = np.meshgrid(centres, centres, indexing="ij")
        x = (x - shift[0]) / magnification
        y = (y - shift[1]) / magnification
        phi = np.deg2rad(rotation_deg)
        cos, sin = np.float32(np.cos(phi)), np.float32(np.sin(phi))
        u = cos * x + sin * y
        v = -sin * x + cos * y
        return cls(u=u.astype(np.float32), v=v.astype(np.float32), pixel=2.0 / (size * magnification))


def soft_step(signed_distance: Array, pixel: float) -> Array:
    """1 inside (distance > 0), 0 outside, a linear ramp one pixel wide across the edge."""
    return np.minimum(np.maximum(0.5 + signed_distance / pixel, 0.0), 1.0)


def smoothstep(x: Array) -> Array:
    """Hermite ramp from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.minimum(np.maximum(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def cylinder(q: Array) -> Array:
    """Projected thickness of a cylinder at normalised distance q from its axis: sqrt(1 - q^2)."""
    return np.sqrt(np.maximum(1.0 - q * q, 0.0))


def tube(q: Array, wall: float = 0.3) -> Array:
    """Projected thickness of a bone: a dense cortical shell around a lighter marrow.

    The difference of two cylinders makes the margins brighter than the middle, as rib and
    clavicle cortices are on a radiograph. Normalised to 1 at the margin's peak.
    """
    inner = 1.0 - wall
    shell = cylinder(q) - 0.75 * inner * cylinder(q / inner)
    return shell / (1.0 - 0.75 * inner * inner + 1e-6)


def ellipse_field(
    u: Array, v: Array, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0
) -> Array:
    """Normalised radius of an (optionally tilted) ellipse: < 1 inside, 1 on the border."""
    du, dv = u - cx, v - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    return np.sqrt((du / ax) ** 2 + (dv / ay) ** 2)


def ball(u: Array, v: Array, cx: float, cy: float, radius: float, pixel: float) -> Array:
    """Projected thickness of a sphere (0..1), anti-aliased at its rim."""
    r = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
    return cylinder(r / radius) * soft_step(radius - r, pixel)


def add_ball(out: Array, canvas: Canvas, cx: float, cy: float, radius: float, weight: float) -> None:
    """Add `weight` x a sphere's projected thickness to `out`, touching only its window."""
    rows, cols = canvas.window(
        cx - radius - canvas.pixel,
        cx + radius + canvas.pixel,
        cy - radius - canvas.pixel,
        cy + radius + canvas.pixel,
    )
    out[rows, cols] += weight * ball(canvas.u[rows, cols], canvas.v[rows, cols], cx, cy, radius, canvas.pixel)


def harmonic_radius(theta: Array, cos_coef: Array, sin_coef: Array) -> Array:
    """1 + sum_k a_k cos(k theta) + b_k sin(k theta), k = 2..K+1: a wobbly outline.

    The coefficients are per-patient constants: they are how lung and heart silhouettes get an
    individual shape that persists across a patient's follow-ups.
    """
    out = np.ones_like(theta)
    for k, (a, b) in enumerate(zip(cos_coef, sin_coef, strict=True), start=2):
        out += a * np.cos(k * theta) + b * np.sin(k * theta)
    return out


def segments(
    u: Array,
    v: Array,
    p0: Array,
    p1: Array,
    width0: Array,
    width1: Array,
    weight: Array,
) -> Array:
    """Sum of tapered Gaussian line segments (vessels, wires, leads), all in one broadcast.

    p0, p1: (N, 2) end points; width0/width1: (N,) half-widths at each end; weight: (N,) peaks.
    """
    if len(p0) == 0:
        return np.zeros_like(u)
    du = (p1[:, 0] - p0[:, 0])[:, None, None]
    dv = (p1[:, 1] - p0[:, 1])[:, None, None]
    length2 = du * du + dv * dv + 1e-9
    pu = u[None] - p0[:, 0, None, None]
    pv = v[None] - p0[:, 1, None, None]
    t = np.clip((pu * du + pv * dv) / length2, 0.0, 1.0)
    d2 = (pu - t * du) ** 2 + (pv - t * dv) ** 2
    w = width0[:, None, None] + t * (width1 - width0)[:, None, None]
    return np.einsum("n,nij->ij", weight.astype(np.float32), np.exp(-d2 / (w * w)).astype(np.float32))


def splat_segments(
    size: int,
    extent: float,
    p0: Array,
    p1: Array,
    width0: Array,
    width1: Array,
    weight: Array,
    classes: int = 3,
) -> Array:
    """Tapered Gaussian lines on a (size, size) grid covering [-extent, extent]^2, fast.

    Instead of a distance field per segment (cost: segments x pixels), points are dropped along
    every segment every half pixel, splatted bilinearly, and blurred with a Gaussian whose
    width matches the line's (sigma = w / sqrt 2, so the profile is exp(-d^2 / w^2) with peak
    `weight`). Widths are binned into a few classes, one blur each.
    """
    texel = 2.0 * extent / size
    lengths = np.hypot(*(p1 - p0).T)
    counts = np.maximum(2, np.ceil(lengths / (0.5 * texel)).astype(int) + 1)
    seg = np.repeat(np.arange(len(p0)), counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) / np.repeat(
        counts - 1, counts
    )
    points = p0[seg] + t[:, None] * (p1 - p0)[seg]
    width = width0[seg] + t * (width1 - width0)[seg]
    step = lengths[seg] / (counts[seg] - 1)
    mass = weight[seg] * np.sqrt(np.pi) * width * step / (texel * texel)  # line density / texel area
    cols = (points[:, 0] + extent) / texel - 0.5
    rows = (points[:, 1] + extent) / texel - 0.5
    edges = np.quantile(width, np.linspace(0, 1, classes + 1)[1:-1]) if len(width) > classes else []
    group = np.searchsorted(edges, width)
    out = np.zeros((size, size), dtype=np.float64)
    for g in np.unique(group):
        sel = group == g
        grid = np.zeros(size * size + 1, dtype=np.float64)
        r0, c0 = np.floor(rows[sel]).astype(int), np.floor(cols[sel]).astype(int)
        fr, fc = rows[sel] - r0, cols[sel] - c0
        for dr, dc, share in (
            (0, 0, (1 - fr) * (1 - fc)),
            (0, 1, (1 - fr) * fc),
            (1, 0, fr * (1 - fc)),
            (1, 1, fr * fc),
        ):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            index = np.where(inside, r * size + c, size * size)  # outside: a discarded bin
            grid += np.bincount(index, weights=mass[sel] * share, minlength=size * size + 1)
        sigma = float(np.median(width[sel])) / np.sqrt(2.0) / texel
        out += ndimage.gaussian_filter(grid[:-1].reshape(size, size), sigma, mode="constant")
    return out.astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> Array:
    """A smooth random field (zero mean, unit-ish std) with about `cells` blobs per side."""
    cells = max(2, int(cells))
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    zoom = (size + 3 * size / cells) / (cells + 3)
    field = ndimage.zoom(coarse, zoom, order=3, mode="reflect")
    off = int(round(1.5 * size / cells))
    field = field[off : off + size, off : off + size]
    if field.shape != (size, size):  # rounding in zoom: pad by edge values
        field = np.pad(field, ((0, size - field.shape[0]), (0, size - field.shape[1])), mode="edge")
    return field / (field.std() + 1e-6)


def sample_field(field: Array, extent: float, u: Array, v: Array) -> Array:
    """Bilinear look-up of a square field covering [-extent, extent]^2 at points (u, v)."""
    n = field.shape[0]
    scale = (n - 1) / (2.0 * extent)
    rows = (v + extent) * scale
    cols = (u + extent) * scale
    return ndimage.map_coordinates(field, [rows, cols], order=1, mode="constant", cval=0.0).astype(np.float32)
