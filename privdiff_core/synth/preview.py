"""A contact sheet of synthetic films: look at the data before training on it.

Rows are patients chosen to cover every site, both sexes, the four age groups and the findings;
columns are each patient's follow-ups, captioned with site, sex, age, view and findings. Below
them, each main finding is shown on one patient's film next to the same film without it (same
anatomy, pose, exposure and noise), so what a finding changes is plain to see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privdiff_core.attributes import AGE_GROUPS, SEXES
from privdiff_core.synth.cohort import make_anatomy, make_studies, stream, visit_rng
from privdiff_core.synth.federation import SynthParams, SynthSample, render_patient, site_patients
from privdiff_core.synth.pathology import sample_finding
from privdiff_core.synth.render import render_density
from privdiff_core.synth.scanner import acquire
from privdiff_core.synth.sites import site_profile

# The findings a radiologist must be able to see on the sheet (issue 2 names these five and more).
MAIN_FINDINGS = ("Cardiomegaly", "Effusion", "Nodule", "Mass", "Pneumothorax", "Consolidation")
_EXAMPLE_STREAM = 0x5EE  # purpose key of the random stream that places the example findings

SHORT = {"Pleural_Thickening": "PleuralThick", "Consolidation": "Consolid", "Infiltration": "Infiltr"}


def pick_patients(params: SynthParams, rows: int) -> list[list[SynthSample]]:
    """`rows` patients, round-robin over sites, preferring unseen (sex, age group) and findings."""
    cohorts = [site_patients(params, site_profile(s, params.seed)) for s in range(params.sites)]
    chosen, seen_kinds, seen_findings = [], set(), set()
    cursor = [0] * params.sites
    while len(chosen) < rows and any(c < len(p) for c, p in zip(cursor, cohorts, strict=True)):
        for site, patients in enumerate(cohorts):
            best, best_gain = None, -1
            for k in range(cursor[site], min(cursor[site] + 12, len(patients))):
                films = render_patient(patients[k], params)
                kind = (patients[k].sex, films[0].study.age_group)
                findings = {f for s in films for f in s.study.findings}
                gain = 2 * (kind not in seen_kinds) + len(findings - seen_findings)
                if gain > best_gain:
                    best, best_gain, best_k = films, gain, k
            if best is None:
                continue
            cursor[site] = best_k + 1
            chosen.append(best)
            seen_kinds.add((best[0].patient.sex, best[0].study.age_group))
            seen_findings |= {f for s in best for f in s.study.findings}
            if len(chosen) == rows:
                break
    return chosen


def finding_pair(
    params: SynthParams, name: str, patient_index: int, site: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One patient's first film without and with `name`: same anatomy, pose, exposure and noise."""
    patient = site_patients(params, site_profile(site, params.seed))[patient_index]
    anatomy = make_anatomy(patient, params.seed, params.texture_size)
    study = make_studies(patient, anatomy, 1, params.seed)[0]
    finding = sample_finding(name, stream(params.seed, site, patient_index, _EXAMPLE_STREAM), anatomy)
    films = []
    for findings in ({}, {name: finding}):
        density = render_density(anatomy, study.followup, findings, params.size)
        films.append(acquire(density, patient.site, study.followup, visit_rng(study, params.seed)))
    return films[0], films[1]


def caption(sample: SynthSample) -> str:
    study = sample.study
    findings = ", ".join(SHORT.get(f, f) for f in study.findings) or "no finding"
    return (
        f"{sample.patient.site.name} {SEXES[sample.patient.sex]} {study.age_years}y "
        f"({AGE_GROUPS[study.age_group]}) {study.followup.view}\n{findings}"
    )


def contact_sheet(
    path: str | Path, params: SynthParams, rows: int = 8, findings: tuple[str, ...] = MAIN_FINDINGS
) -> Path:
    """Render `rows` patients x their follow-ups, then each of `findings` beside its absence, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patients = pick_patients(params, rows)
    cols = max(params.images_per_patient, 4)
    pairs_per_row = cols // 2
    finding_rows = -(-len(findings) // pairs_per_row)
    n_rows = len(patients) + finding_rows
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.3 * cols, 2.6 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def show(ax, image: np.ndarray, title: str) -> None:
        ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
        ax.set_title(title, fontsize=6.5)

    for r, films in enumerate(patients):
        for c, sample in enumerate(films[:cols]):
            show(axes[r][c], sample.image, caption(sample))
    patients_per_site = params.patients
    for k, name in enumerate(findings):
        row, col = len(patients) + k // pairs_per_row, 2 * (k % pairs_per_row)
        without, with_finding = finding_pair(params, name, k % patients_per_site)
        show(axes[row][col], without, f"patient {k}: no finding")
        show(axes[row][col + 1], with_finding, f"patient {k}: {name}")
    fig.suptitle(
        f"privdiff synth: {params.sites} sites, seed {params.seed}, {params.size}x{params.size}; "
        "top: one patient per row, columns its follow-ups; bottom: findings beside their absence",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
