"""Render one frontal chest film as a map of attenuation (line integrals, "density").

The density is a sum of layers, each a few vectorised numpy expressions over the canvas:
soft tissue of the trunk, neck and shoulders; aerated lungs (subtracted); heart, mediastinum,
trachea and aorta; stomach gas; spine, ribs (posterior arcs and anterior ends), clavicles,
scapulae and humeral heads; breasts; the patient's pulmonary vessel tree; calcifications;
implants and ECG electrodes; then the findings. `scanner.acquire` turns the density into what
a detector at a given site records. Bone is bright (MONOCHROME2 sense) throughout.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from privdiff_core.synth import pathology
from privdiff_core.synth.anatomy import N_RIBS, SIDE_SIGN, TEXTURE_EXTENT, Anatomy
from privdiff_core.synth.followup import FollowUp
from privdiff_core.synth.geometry import (
    Array,
    Canvas,
    add_ball,
    ball,
    cylinder,
    ellipse_field,
    sample_field,
    segments,
    smoothstep,
    soft_step,
    tube,
)
from privdiff_core.synth.scene import Geometry, Scene, base_geometry, build_scene, spine_centre

BONE = 0.11  # attenuation of a rib at its cortical margin, before the patient's bone density
METAL = 2.5  # pacemaker generator, wires: far denser than bone


def render_density(
    anatomy: Anatomy,
    followup: FollowUp,
    findings: Mapping[str, pathology.Finding],
    size: int,
) -> Array:
    """The (size, size) attenuation map of one examination."""
    canvas = Canvas.for_pose(size, followup.shift, followup.rotation_deg, followup.magnification)
    geometry = pathology.adjust_geometry(base_geometry(anatomy, followup), anatomy, findings)
    scene = build_scene(anatomy, geometry, canvas)
    density = soft_tissue(scene)
    density -= lung_air(scene)
    density += mediastinum(scene)
    density += spine(scene)
    density += ribs(scene)
    density += shoulder_girdle(scene)
    density += breasts(scene)
    density += lung_markings(scene, findings)
    density += calcifications(scene)
    density += implants(scene, followup)
    density += pathology.draw_findings(scene, findings)
    return np.clip(density, 0.0, None).astype(np.float32)


def soft_tissue(scene: Scene) -> Array:
    """Trunk, neck and shoulders: thickest in the middle, thinning to the skin line."""
    a, u, v, px = scene.anatomy, scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    shoulder = float(a.shoulder_height.mean())
    into_trunk = smoothstep((v - shoulder + 0.05) / 0.3)
    half_width = a.neck_width + (a.body_width * (0.94 + 0.06 * np.clip(v, -1, 1)) - a.neck_width) * into_trunk
    x = u / half_width
    # The base of the neck and the shoulders are thinner than the chest at the level of the heart.
    depth = 0.72 + 0.28 * smoothstep((v + 0.55) / 0.45)
    trunk = depth * cylinder(x) ** 0.3 * soft_step(half_width - np.abs(u), px)
    tops = []
    for side in (0, 1):  # shoulders: rounded masses rising above the trunk's sides
        rho = ellipse_field(u, v, SIDE_SIGN[side] * 0.95, a.shoulder_height[side] + 0.24, 0.5, 0.3)
        tops.append(cylinder(rho) ** 0.5 * 0.55)
    body = np.maximum(trunk, np.maximum(tops[0], tops[1]))
    return (a.soft_tissue * body).astype(np.float32)


def lung_air(scene: Scene) -> Array:
    """Air in each lung: most where the lung is thickest, with a sharp pleural edge.

    Behind the dome the posterior costophrenic recesses still hold air: a faint lucency under
    each hemidiaphragm.
    """
    g, v = scene.geometry, scene.canvas.v
    air = np.zeros_like(v)
    below = np.clip((v - scene.dome) / 0.14, 0.0, 1.0)
    for side in (0, 1):
        thickness = cylinder(np.minimum(scene.lung_radius[side], 1.0)) ** 0.5
        air += g.air * thickness * scene.lung[side]
        recess = scene.lung_outline[side] * (1.0 - scene.mediastinum) * (scene.dome < v)
        air += 0.3 * g.air * thickness * recess * (1.0 - below)
    return air


def mediastinum(scene: Scene) -> Array:
    """Heart, aortic knob, descending aorta, trachea with main bronchi, stomach bubble."""
    a, g = scene.anatomy, scene.geometry
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    out = 0.06 * cylinder(np.minimum(scene.heart_radius, 1.0)) * scene.heart
    # Upper abdomen under the domes: liver and spleen, denser than the chest wall alone.
    out += 0.14 * soft_step(v - scene.dome, px) * soft_step(a.body_width - np.abs(u), px)
    knob_x = a.spine_x0 + g.mediastinal_shift + 0.075 + 0.05 * a.aorta_unfold
    out += 0.08 * ball(u, v, knob_x, a.knob_height, a.knob_radius, px)
    # Descending aorta: a para-spinal stripe on the patient's left, tortuous with age.
    aorta_x = scene.spine_x + 0.055 + 0.035 * a.aorta_unfold * np.sin(3.0 * (v - a.knob_height))
    along = soft_step(v - a.knob_height, px) * soft_step(scene.dome - v, px)
    out += 0.07 * cylinder((u - aorta_x) / 0.035) * along
    # Trachea and main bronchi: air columns, darker than the mediastinum around them.
    carina = a.knob_height + 0.12
    trachea_x = spine_centre(a, v, 0.0) - 0.008 - 0.01 * a.aorta_unfold + g.mediastinal_shift
    trachea = cylinder((u - trachea_x) / 0.034) * soft_step(carina - v, px)
    cx = float(spine_centre(a, np.float32(carina))) + g.mediastinal_shift
    bronchi = segments(
        u,
        v,
        np.array([[cx, carina], [cx, carina]]),
        np.array([[cx - 0.13, carina + 0.1], [cx + 0.15, carina + 0.13]]),
        np.array([0.024, 0.022]),
        np.array([0.014, 0.013]),
        np.array([1.0, 1.0]),
    )
    out -= 0.13 * np.clip(trachea + bronchi, 0.0, 1.0)
    # Gastric air under the left hemidiaphragm.
    gx = a.dome_centre[1] - 0.04
    gy = g.dome_top[1] + 0.1
    rho = ellipse_field(u, v, gx, gy, 0.11, 0.065)
    out -= 0.2 * cylinder(rho) * soft_step(v - scene.dome - 0.02, px)
    return out.astype(np.float32)


def spine(scene: Scene) -> Array:
    """Vertebral bodies with disc spaces, pedicles and spinous processes, along the patient's curve."""
    a, g = scene.anatomy, scene.geometry
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    edges = a.vertebra_top + np.concatenate([[0.0], np.cumsum(a.vertebra_heights)])
    level = np.clip(np.searchsorted(edges, v) - 1, 0, len(a.vertebra_heights) - 1)
    height = a.vertebra_heights[level]
    frac = (v - edges[level]) / height  # 0 at the top endplate, 1 at the bottom one
    above_top = v < edges[0]
    centre = spine_centre(a, v, 0.0) + g.mediastinal_shift
    half = np.where(above_top, 0.05, 0.062 + 0.006 * np.clip(frac, 0, 1) + 0.0025 * level)
    du = u - centre
    disc = 0.12
    body_rows = soft_step(np.minimum(frac - disc / 2, 1 - disc / 2 - frac) * height, px)
    body = cylinder(du / half) ** 0.5 * np.where(above_top, 0.8, body_rows)
    endplates = np.exp(
        -(((np.minimum(np.abs(frac - disc / 2), np.abs(1 - disc / 2 - frac))) * height / 0.008) ** 2)
    )
    pedicle_rho = np.hypot((np.abs(du) - half * 0.72) / 0.017, (frac - 0.35) * height / 0.026)
    pedicles = np.exp(-((pedicle_rho - 1.0) ** 2) / 0.08)
    spinous = np.exp(-(((du - g.spine_offset) / 0.012) ** 2 + ((frac - 0.75) * height / 0.022) ** 2))
    bone = 0.07 * body + 0.025 * endplates * (np.abs(du) < half) + 0.035 * pedicles + 0.04 * spinous
    bone *= ~above_top | (np.abs(du) < 0.06)
    return (a.bone_density * bone).astype(np.float32)


def _lateral_wall(anatomy: Anatomy, g: Geometry, side: int, y: Array) -> Array:
    """|u| of one lung's lateral wall at height y (0 above the apex)."""
    yn = np.clip((y - g.lung_cy[side]) / g.lung_ay[side], -1.0, 1.0)
    half_width = g.lung_ax[side] * (1.0 + anatomy.lung_taper[side] * yn)
    reach = (1.0 - np.abs(np.minimum(yn, 0.4)) ** 2.4) ** (1 / 2.4)
    return np.abs(g.lung_cx[side]) + half_width * reach


def rib_anchors(anatomy: Anatomy, g: Geometry) -> Array:
    """Height of each posterior rib where it meets its vertebra, (2, N_RIBS)."""
    edges = anatomy.vertebra_top + np.concatenate([[0.0], np.cumsum(anatomy.vertebra_heights)])
    centres = 0.5 * (edges[:-1] + edges[1:])[1 : N_RIBS + 1]  # T1 is the second level (C7 first)
    spread = edges[1] + (centres - edges[1]) * g.rib_spread
    return spread[None, :] + anatomy.rib_jitter


def ribs(scene: Scene) -> Array:
    """Posterior rib arcs from the spine to the chest wall and anterior ribs running down-medially.

    Each rib is a band around a centre curve y(t), t = 0 at the costovertebral joint and 1 at
    the lateral wall: y(t) = y0 - rise (2t - t^2) + curl t^3.5 (rising, then curling down as
    the rib turns forward). The anterior rib continues from the lateral end, sloping down
    towards the sternum and fading where it becomes (uncalcified) cartilage.
    """
    a, g = scene.anatomy, scene.geometry
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    y0 = rib_anchors(a, g)  # (2, N)
    sign = SIDE_SIGN[:, None]
    spine_at = spine_centre(a, y0, 0.0) + g.mediastinal_shift
    x0 = spine_at + sign * 0.05
    wall = np.stack([_lateral_wall(a, g, s, y0[s] + 0.06) for s in (0, 1)])
    length = np.maximum(np.abs(wall * sign - x0) * a.rib_reach + 0.05, 0.12)  # (2, N)
    curl = a.rib_curl * (1.0 - g.rib_lift)
    rise = a.rib_rise * (1.0 + 0.4 * g.rib_lift)
    thick = np.broadcast_to(
        a.rib_thickness * (0.75 + 0.25 * np.linspace(0.7, 1.2, N_RIBS))[None, :], y0.shape
    )

    canvas = scene.canvas
    out = np.zeros_like(u)
    y_lat = y0 - rise + curl
    x_lat = x0 + sign * length
    a_len = 0.55 * length
    sg = np.broadcast_to(sign, y0.shape)
    slope = a.anterior_slope
    # Each rib is drawn inside its own window only: cost follows its area, not the image's.
    post = canvas.windows(
        np.minimum(x0, x0 + sg * 1.1 * length).ravel(),
        np.maximum(x0, x0 + sg * 1.1 * length).ravel(),
        (y0 - rise - thick).ravel(),
        (y0 - 0.79 * rise + 1.4 * curl + thick).ravel(),
    )
    ant = canvas.windows(
        (np.minimum(x_lat, x_lat - sg * a_len) - thick).ravel(),
        (np.maximum(x_lat, x_lat - sg * a_len) + thick).ravel(),
        (y_lat - 0.05 - thick).ravel(),
        (y_lat + slope * a_len * 0.75 + thick).ravel(),
    )
    params = zip(
        *(
            np.asarray(x).ravel().tolist()
            for x in (sg, y0, x0, length, rise, curl, thick, y_lat, x_lat, a_len, slope)
        ),
        post,
        ant,
        strict=True,
    )
    for s, ys, xs, L, r, c, th, yl, xl, al, k, (rows, cols), (arows, acols) in params:
        # Posterior arc.
        uu, vv = u[rows, cols], v[rows, cols]
        t = (uu - xs) * (s / L)
        tc = np.minimum(np.maximum(t, 0.0), 1.1)
        t25 = tc * tc * np.sqrt(tc)
        centre = ys - r * tc * (2 - tc) + c * t25 * tc
        gradient = (r * (2 * tc - 2) + 3.5 * c * t25) / L
        q = np.abs(vv - centre) * ((2.0 / th) / np.sqrt(1.0 + gradient * gradient))
        ends = np.minimum(np.minimum(np.maximum(t, 0.0) / 0.06, np.maximum(1.1 - t, 0.0) / 0.1), 1.0)
        out[rows, cols] += tube(q) * ends
        # Anterior rib: from the lateral end, medially and downwards, 55% of the way in.
        uu, vv = u[arows, acols], v[arows, acols]
        s_ant = (xl - uu) * (s / al)
        sc = np.minimum(np.maximum(s_ant, 0.0), 1.0)
        q = np.abs(vv - (yl - 0.03 + k * al * sc * (1 - 0.25 * sc))) * (
            1.0 / (0.34 * th * np.sqrt(1.0 + k * k))
        )
        a_ends = np.minimum(
            np.minimum(np.maximum(s_ant + 0.02, 0.0) / 0.12, np.maximum(1.0 - s_ant, 0.0) / 0.35), 1.0
        )
        out[arows, acols] += 0.45 * cylinder(q) * a_ends
    dot_radius = max(0.016, 0.8 * px)
    for side, rib, pos in a.cartilage_dots:  # calcified costal cartilage beyond the anterior ends
        side, rib = int(side), int(rib)
        reach = a_len[side, rib] * (1.0 + 0.45 * pos)
        du, dv = (
            x_lat[side, rib] - SIDE_SIGN[side] * reach,
            y_lat[side, rib] + a.anterior_slope[side, rib] * reach * 0.8,
        )
        add_ball(out, canvas, float(du), float(dv), dot_radius, 1.8 * a.calcification)
    if a.marks.fracture is not None:  # healed fracture: callus bulging around one rib
        side, rib, pos = a.marks.fracture
        fu = float(x0[side, rib] + SIDE_SIGN[side] * pos * length[side, rib])
        fv = float(y0[side, rib] - rise[side, rib] * (2 * pos - pos**2) + curl[side, rib] * pos**3.5)
        add_ball(out, canvas, fu, fv, 0.9 * float(thick[side, rib]), 0.7)
        add_ball(out, canvas, fu + 0.02, fv + 0.012, 0.6 * float(thick[side, rib]), 0.6)
    return (BONE * a.bone_density * out).astype(np.float32)


def shoulder_girdle(scene: Scene) -> Array:
    """Clavicles (S-shaped, from the sternal notch to the acromion), scapulae and humeral heads."""
    a, g = scene.anatomy, scene.geometry
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    out = np.zeros_like(u)
    for side in (0, 1):
        sign = SIDE_SIGN[side]
        y_med = a.clavicle_y[side] - g.clavicle_lift
        x_med = float(spine_centre(a, np.float32(y_med))) + g.mediastinal_shift + sign * 0.055
        length = a.clavicle_length[side]
        t = (u - x_med) * sign / length
        tc = np.clip(t, 0.0, 1.0)
        tan = np.tan(a.clavicle_angle[side] * (1.0 - 0.4 * g.clavicle_lift / 0.05))
        centre = y_med - tan * length * tc + a.clavicle_bend[side] * 0.035 * np.sin(2 * np.pi * tc)
        slope = -tan + a.clavicle_bend[side] * 0.035 * 2 * np.pi * np.cos(2 * np.pi * tc) / length
        dist = np.abs(v - centre) / np.sqrt(1 + slope**2)
        half = 0.04 - 0.012 * tc
        ends = smoothstep(t / 0.04) * smoothstep((1.05 - t) / 0.06)
        out += 2.2 * tube(dist / half) * ends
        # Scapula: a tilted plate whose medial border shows over the lateral lung in AP films.
        sx = g.scapula_x[side]
        rho = ellipse_field(u, v, sx, -0.36, 0.17, 0.36, sign * 0.18)
        out += 0.45 * cylinder(rho) ** 0.3 * soft_step((1 - rho) * 0.17, px)
        out += 0.35 * np.exp(-(((rho - 0.97) / 0.05) ** 2))
        hx, hy = a.humerus_xy[side]
        out += 2.6 * ball(u, v, hx, hy, 0.14, px) + 0.7 * np.exp(
            -(((np.hypot(u - hx, v - hy) - 0.14) / 0.01) ** 2)
        )
    return (BONE * a.bone_density * out).astype(np.float32)


def breasts(scene: Scene) -> Array:
    """Breast shadows over the lower lung fields, with a sharp inferolateral edge."""
    a = scene.anatomy
    if a.breast_size <= 0:
        return np.zeros_like(scene.canvas.u)
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    out = np.zeros_like(u)
    for side in (0, 1):
        ax, ay = 0.33 * a.breast_size**0.5, 0.25 * a.breast_size**0.5
        cy = 0.3 + a.breast_drop
        rho = ellipse_field(u, v, SIDE_SIGN[side] * 0.5, cy, ax, ay)
        upper_fade = smoothstep((v - cy + 0.9 * ay) / (0.9 * ay))
        out += 0.28 * a.breast_size * cylinder(rho) ** 0.4 * soft_step((1 - rho) * ay, px) * upper_fade
    return out


def lung_markings(scene: Scene, findings: Mapping[str, pathology.Finding]) -> Array:
    """The patient's vessel tree and hila, stretched with the breath, absent where no lung is."""
    a, g = scene.anatomy, scene.geometry
    u, v = scene.canvas.u, scene.canvas.v
    hy = 0.5 * (scene.hila[0][1] + scene.hila[1][1])
    stretch = float(np.mean(g.lung_ay / a.lung_ay))
    texture = sample_field(a.texture, TEXTURE_EXTENT, u - g.mediastinal_shift, hy + (v - hy) / stretch)
    visible = pathology.vessel_mask(scene, findings)
    out = texture * visible
    for side in (0, 1):
        hx, hyy = scene.hila[side]
        out += 0.07 * np.exp(-(((u - hx) / 0.06) ** 2 + ((v - hyy) / 0.09) ** 2))
    return out


def calcifications(scene: Scene) -> Array:
    """Aortic knob rim calcification, brighter and longer with age."""
    a, g = scene.anatomy, scene.geometry
    if a.calcification < 0.15:
        return np.zeros_like(scene.canvas.u)
    u, v = scene.canvas.u, scene.canvas.v
    kx = a.spine_x0 + g.mediastinal_shift + 0.075 + 0.05 * a.aorta_unfold
    r = np.hypot(u - kx, v - a.knob_height)
    angle = np.arctan2(v - a.knob_height, u - kx)
    arc = smoothstep((np.cos(angle + 0.6) - 0.2) / 0.4)  # the upper-lateral rim
    width = max(0.008, scene.canvas.pixel * 0.6)
    return (0.5 * a.calcification * arc * np.exp(-(((r - a.knob_radius) / width) ** 2))).astype(np.float32)


def implants(scene: Scene, followup: FollowUp) -> Array:
    """Pacemaker with its lead, sternal cerclage wires, and this film's ECG electrodes."""
    a, g = scene.anatomy, scene.geometry
    u, v, px = scene.canvas.u, scene.canvas.v, scene.canvas.pixel
    out = np.zeros_like(u)
    marks = a.marks
    if marks.pacemaker is not None:
        px0, py0 = marks.pacemaker
        box = np.minimum(0.075 - np.abs(u - px0), 0.05 - np.abs(v - py0))
        out += METAL * soft_step(box, px)
        # Lead: a curve from the generator over the great veins into the right ventricle.
        hx = float(spine_centre(a, np.float32(g.heart_cy))) + g.heart_cx + g.mediastinal_shift
        pts = np.array(
            [
                (px0 - 0.05, py0 + 0.01),
                (0.05 + marks.lead_bend, -0.35),
                (-0.04, -0.05),
                (hx - 0.05, g.heart_cy + 0.05),
                (hx + 0.1, g.heart_cy + 0.14),
            ]
        )
        out += 1.2 * segments(
            u,
            v,
            pts[:-1],
            pts[1:],
            np.full(4, max(0.007, px * 0.7)),
            np.full(4, max(0.007, px * 0.7)),
            np.ones(4),
        )
    for k in range(marks.sternal_wires):
        cx = float(a.spine_x0) + marks.wire_jitter[k, 0]
        cy = -0.42 + k * 0.12 + marks.wire_jitter[k, 1]
        rho = ellipse_field(u, v, cx, cy, 0.03, 0.013)
        out += 1.4 * np.exp(-(((rho - 1.0) / 0.3) ** 2)) + 1.2 * ball(u, v, cx + 0.03, cy, 0.009, px)
    for eu, ev in followup.electrodes:
        r = np.hypot(u - eu, v - ev)
        out += 0.9 * np.exp(-(((r - 0.025) / 0.006) ** 2)) + 1.5 * ball(u, v, eu, ev, 0.01, px)
    return out
