"""Identity, follow-ups, age, sex and findings change the image where and as they should."""

import numpy as np
import pytest

from privdiff_core.attributes import FINDINGS
from privdiff_core.synth import SynthParams
from privdiff_core.synth.anatomy import sample_anatomy
from privdiff_core.synth.cohort import make_anatomy, make_studies
from privdiff_core.synth.federation import render_patient, site_patients
from privdiff_core.synth.followup import sample_followup
from privdiff_core.synth.geometry import Canvas
from privdiff_core.synth.pathology import sample_finding
from privdiff_core.synth.render import breasts, calcifications, render_density, ribs
from privdiff_core.synth.scanner import acquire
from privdiff_core.synth.scene import base_geometry, build_scene
from privdiff_core.synth.sites import site_profile

SIZE = 64
STILL = sample_followup(np.random.default_rng(0), ap_fraction=0.0, electrode_rate=0.0)


def anatomy(seed, age=55.0, sex=0):
    return sample_anatomy(np.random.default_rng(seed), age, sex, texture_size=SIZE)


def film(anat, findings=None, followup=STILL, site=0):
    density = render_density(anat, followup, findings or {}, SIZE)
    return acquire(density, site_profile(site, 0), followup, np.random.default_rng(1))


def silhouette_width(anat, findings=None):
    """Widest row of the cardiac silhouette, in pixels, and the cardiothoracic ratio."""
    from privdiff_core.synth.pathology import adjust_geometry

    geometry = adjust_geometry(base_geometry(anat, STILL), anat, findings or {})
    scene = build_scene(
        anat, geometry, Canvas.for_pose(SIZE, STILL.shift, STILL.rotation_deg, STILL.magnification)
    )
    above_dome = scene.canvas.v < scene.dome
    heart = ((scene.heart > 0.5) & above_dome).sum(axis=1).max()
    lungs = (scene.lung_outline[0] + scene.lung_outline[1]) > 0.5
    cols = np.flatnonzero(lungs.any(axis=0))
    return heart, heart / (cols[-1] - cols[0] + 1)


def test_follow_ups_differ_yet_share_the_anatomy():
    params = SynthParams(sites=1, patients=3, images_per_patient=3, size=SIZE, seed=0)
    patient = site_patients(params, site_profile(0, 0))[0]
    first = make_anatomy(patient, params.seed, params.texture_size)
    again = make_anatomy(patient, params.seed, params.texture_size)
    for name in (
        "rib_rise",
        "rib_curl",
        "lung_cos",
        "heart_cos",
        "vertebra_heights",
        "clavicle_angle",
        "texture",
    ):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    studies = make_studies(patient, first, 3, params.seed)
    assert len({(s.followup.shift, s.followup.inspiration, s.followup.rotation_deg) for s in studies}) == 3
    images = [s.image for s in render_patient(patient, params)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(images[a] - images[b]).mean() > 0.01  # never "the same pixels"


def test_identity_outweighs_follow_up_variation():
    """Anatomy measured on each film varies far more between patients than between one patient's
    follow-ups: the intraclass correlation of silhouette and lung measurements is high."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(12):
        anat = anatomy(seed, age=float(rng.uniform(25, 85)), sex=seed % 2)
        per_visit = []
        for visit in range(3):
            fu = sample_followup(np.random.default_rng(100 + 10 * seed + visit), 0.1, 0.0)
            g = base_geometry(anat, fu)
            scene = build_scene(anat, g, Canvas.for_pose(SIZE))  # pose removed: anatomy + breath only
            heart = ((scene.heart > 0.5) & (scene.canvas.v < scene.dome)).sum(axis=1).max()
            lungs = [(lung > 0.5).sum() for lung in scene.lung]
            per_visit.append([heart, lungs[0] / (lungs[1] + 1)])
        rows.append(per_visit)
    values = np.array(rows, dtype=float)  # (patients, visits, features)
    within = values.var(axis=1).mean(axis=0)
    between = values.mean(axis=1).var(axis=0)
    icc = between / (between + within)
    assert (icc > 0.7).all(), icc


def test_cardiomegaly_widens_the_heart_past_half_the_chest():
    normal_ratios = []
    for seed in range(12):
        anat = anatomy(seed)
        cardio = {"Cardiomegaly": sample_finding("Cardiomegaly", np.random.default_rng(seed), anat)}
        normal_width, normal_ratio = silhouette_width(anat)
        wide_width, wide_ratio = silhouette_width(anat, cardio)
        normal_ratios.append(normal_ratio)
        assert wide_width >= 1.2 * normal_width
        # the radiologist's rule: a cardiothoracic ratio above one half is cardiomegaly
        assert wide_ratio > 0.5
        assert wide_ratio > normal_ratio + 0.1
    # Normal hearts stay under one half, as in real films, where a few large normal hearts
    # reach the limit (about one in ten here).
    assert np.mean(np.array(normal_ratios) < 0.5) >= 0.75
    assert np.mean(normal_ratios) < 0.46


def _difference(name, seed=0):
    anat = anatomy(seed)
    finding = sample_finding(name, np.random.default_rng(seed), anat)
    return anat, finding, np.abs(film(anat, {name: finding}) - film(anat))


@pytest.mark.parametrize("name", FINDINGS)
def test_every_finding_is_visible_inside_the_chest(name):
    anat, _, diff = _difference(name)
    geometry = base_geometry(anat, STILL)
    scene = build_scene(
        anat, geometry, Canvas.for_pose(SIZE, STILL.shift, STILL.rotation_deg, STILL.magnification)
    )
    thorax = np.maximum.reduce([scene.lung_outline[0], scene.lung_outline[1], scene.mediastinum])
    assert diff.max() > 0.08, f"{name} is not visible"
    assert diff[thorax > 0.5].sum() > 0.75 * diff.sum(), f"{name} changes the image outside the chest"


def test_nodule_and_mass_sit_where_they_were_placed():
    for name in ("Nodule", "Mass"):
        _, finding, diff = _difference(name, seed=3)
        row, col = np.unravel_index(np.argmax(diff), diff.shape)
        u, v = (col + 0.5) * 2 / SIZE - 1, (row + 0.5) * 2 / SIZE - 1
        assert np.hypot(u - finding.centre[0], v - finding.centre[1]) < finding.size + 4 / SIZE


def test_effusion_fills_the_lung_bases_not_the_apices():
    anat, _, diff = _difference("Effusion", seed=2)
    assert diff[SIZE // 2 :].sum() > 10 * diff[: SIZE // 3].sum()


def test_pneumothorax_removes_lung_markings_at_the_rim():
    anat = anatomy(5)
    finding = sample_finding("Pneumothorax", np.random.default_rng(5), anat)
    signed = film(anat, {"Pneumothorax": finding}) - film(anat)
    assert signed.min() < -0.05  # a lucent rim without vessels
    assert (signed < -0.02).sum() > 10


def test_female_anatomy_casts_breast_shadows_over_the_lower_zones():
    for seed in range(3):
        male, female = anatomy(seed, sex=0), anatomy(seed, sex=1)
        canvas = Canvas.for_pose(SIZE)
        m = breasts(build_scene(male, base_geometry(male, STILL), canvas))
        f = breasts(build_scene(female, base_geometry(female, STILL), canvas))
        assert m.max() == 0 and f.max() > 0.05
        lower, upper = f[SIZE // 2 :].sum(), f[: SIZE // 3].sum()
        assert lower > 5 * upper


def test_age_thins_the_ribs_and_calcifies_the_aorta():
    canvas = Canvas.for_pose(SIZE)
    young_ribs, old_ribs, young_calc, old_calc = [], [], [], []
    for seed in range(8):
        for age, rib_list, calc_list in ((25.0, young_ribs, young_calc), (85.0, old_ribs, old_calc)):
            anat = anatomy(seed, age=age, sex=seed % 2)
            scene = build_scene(anat, base_geometry(anat, STILL), canvas)
            rib_list.append(ribs(scene).sum() / anat.rib_thickness)
            calc_list.append(calcifications(scene).sum())
    assert np.mean(old_ribs) < 0.85 * np.mean(young_ribs)  # bone density falls
    assert np.mean(old_calc) > 5 * max(np.mean(young_calc), 1e-3)  # aortic knob calcifies


def test_sites_differ_in_case_mix_and_look():
    sites = [site_profile(k, 0) for k in range(4)]
    assert sites[1].prevalence("Pneumonia", 0.4) > 1.5 * sites[0].prevalence("Pneumonia", 0.4)
    assert sites[2].prevalence("Edema", 0.6) > 2 * sites[3].prevalence("Edema", 0.6)
    assert sites[0].prevalence("Cardiomegaly", 0.9) > 2 * sites[0].prevalence("Cardiomegaly", 0.1)
    assert len({s.photometric for s in sites}) == 2 and len({s.bits_stored for s in sites}) == 4
    anat = anatomy(0)
    looks = [film(anat, site=k) for k in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(looks[a] - looks[b]).mean() > 0.02
    many = site_profile(9, 0)  # beyond the four archetypes: a jittered copy, still valid
    assert many.name == "site_09" and 8 <= many.bits_stored <= 16


def test_contact_sheet_shows_each_main_finding_beside_its_absence(tmp_path):
    from privdiff_core.synth.preview import MAIN_FINDINGS, contact_sheet, finding_pair

    params = SynthParams(sites=2, patients=8, images_per_patient=2, size=SIZE, seed=0)
    for k, name in enumerate(MAIN_FINDINGS):
        without, with_finding = finding_pair(params, name, k)
        assert np.abs(with_finding - without).max() > 0.08, name  # same film, the finding added
    sheet = contact_sheet(tmp_path / "sheet.png", params, rows=2)
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
