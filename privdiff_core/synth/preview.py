"""A contact sheet of synthetic films: look at the data before training on it.

Rows are patients chosen to cover every site, both sexes, the four age groups and the findings;
columns are each patient's follow-ups, captioned with site, sex, age, view and findings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privdiff_core.attributes import AGE_GROUPS, SEXES
from privdiff_core.synth.federation import SynthParams, SynthSample, render_patient, site_patients
from privdiff_core.synth.sites import site_profile

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


def caption(sample: SynthSample) -> str:
    study = sample.study
    findings = ", ".join(SHORT.get(f, f) for f in study.findings) or "no finding"
    return (
        f"{sample.patient.site.name} {SEXES[sample.patient.sex]} {study.age_years}y "
        f"({AGE_GROUPS[study.age_group]}) {study.followup.view}\n{findings}"
    )


def contact_sheet(path: str | Path, params: SynthParams, rows: int = 8) -> Path:
    """Render a sheet of `rows` patients x their follow-ups to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patients = pick_patients(params, rows)
    cols = params.images_per_patient
    fig, axes = plt.subplots(len(patients), cols, figsize=(2.3 * cols, 2.6 * len(patients)), squeeze=False)
    for r, films in enumerate(patients):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(films):
                ax.imshow(np.clip(films[c].image, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
                ax.set_title(caption(films[c]), fontsize=6.5)
    fig.suptitle(
        f"privdiff synth: {params.sites} sites, seed {params.seed}, {params.size}x{params.size}; "
        "each row one patient, columns its follow-ups",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
