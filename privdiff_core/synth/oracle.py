"""The oracle anonymizer: a film's findings re-rendered on a freshly drawn patient of its site.

No learned anonymizer can do better than this on the synthetic federation: the generator knows
which findings a film shows, so it can film exactly those findings on a new person (new anatomy,
new age and sex, drawn from the same site's demographics) with the same site's scanner. What an
attacker still links after the oracle is what the findings, the site and the demographics
distribution give away (the privacy floor); what a diagnosis network still reads is everything
the findings carry (the utility ceiling).

An oracle patient is patient number `ORACLE_INDEX_BASE + key` of the site: every random choice
comes from the same keyed streams as the federation's own patients (`cohort.stream`), so the
draw is reproducible from `key` and never coincides with a generated patient (whose indices
are below the per-site patient count).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from privdiff_core.attributes import FINDINGS
from privdiff_core.synth.cohort import Study, make_anatomy, make_patient, stream, visit_rng
from privdiff_core.synth.dicom import study_uids
from privdiff_core.synth.federation import SynthParams, SynthSample
from privdiff_core.synth.followup import sample_followup
from privdiff_core.synth.names import staff_name
from privdiff_core.synth.pathology import sample_finding
from privdiff_core.synth.render import render_density
from privdiff_core.synth.scanner import acquire
from privdiff_core.synth.sites import SiteProfile

ORACLE_INDEX_BASE = 1 << 40  # far above any site's patient count
_ORACLE_FILM = 0x0AC1E  # purpose of the stream that draws the film (findings' looks, positioning)


def oracle_sample(site: SiteProfile, findings: Iterable[str], params: SynthParams, key: int) -> SynthSample:
    """One film showing `findings` on a new patient of `site`, drawn reproducibly from `key` (>= 0)."""
    if key < 0:
        raise ValueError(f"oracle key must be >= 0, got {key}")
    wanted = set(findings)
    unknown = sorted(wanted - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown finding(s) {', '.join(unknown)}; choose from {', '.join(FINDINGS)}")
    index = ORACLE_INDEX_BASE + int(key)
    patient = make_patient(site, index, f"ORACLE{key:010d}", "test", params.seed)
    anatomy = make_anatomy(patient, params.seed, params.texture_size)
    rng = stream(params.seed, site.index, index, _ORACLE_FILM)
    # In FINDINGS order, so that the same set of findings always draws the same looks.
    looks = {name: sample_finding(name, rng, anatomy) for name in FINDINGS if name in wanted}
    followup = sample_followup(rng, site.ap_fraction, site.electrode_rate)
    study = Study(
        patient=patient,
        visit=0,
        date=patient.birth_date + dt.timedelta(days=int(round(patient.first_age * 365.25))),
        time="120000",
        accession=f"ORACLE{key % 10**10:010d}",
        referring=staff_name(rng),
        operator=staff_name(rng),
        followup=followup,
        findings=looks,
    )
    density = render_density(anatomy, followup, looks, params.size)
    image = acquire(density, site, followup, visit_rng(study, params.seed))
    return SynthSample(image=image, study=study, sop_instance_uid=study_uids(study, params.seed)[2])
