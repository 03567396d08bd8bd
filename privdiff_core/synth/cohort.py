"""Patients of a site, their examinations over time, and the patient-level split.

Every random choice is drawn from a generator keyed by (seed, site, patient, purpose), never
from a shared stream: patient 17 of site 2 is the same person however many patients or sites
are generated and in whatever order (or process) they are rendered.

Findings evolve across a patient's films as a two-state Markov chain per finding whose
stationary probability is the site's prevalence for the patient's age: structural findings
(`pathology.CHRONIC`) persist, acute ones appear and resolve. A finding keeps its place and
size while it persists.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from privdiff_core.attributes import FINDINGS, age_group
from privdiff_core.synth.anatomy import Anatomy, sample_anatomy
from privdiff_core.synth.followup import FollowUp, sample_followup
from privdiff_core.synth.names import patient_name, staff_name
from privdiff_core.synth.pathology import CHRONIC, Finding, sample_finding
from privdiff_core.synth.sites import SiteProfile

SPLITS = ("train", "val", "test")
PERSISTENCE = {True: 0.95, False: 0.45}  # P(finding still there at the next film): chronic, acute

# Purposes of the keyed random streams.
_DEMOGRAPHICS, _ANATOMY, _FINDINGS, _VISIT, _SPLIT, _IDS = range(6)


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent random generator for one purpose (see the module docstring)."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


@dataclass(frozen=True)
class Patient:
    """One person at one site: identity, demographics and the split they belong to."""

    site: SiteProfile
    index: int
    patient_id: str
    name: str  # DICOM person name, "FAMILY^GIVEN^MIDDLE"
    sex: int  # 0 = M, 1 = F
    birth_date: dt.date
    first_age: float  # age in years at the first examination
    split: str


@dataclass(frozen=True)
class Study:
    """One examination (one film): when, why it looks as it does, and what it shows."""

    patient: Patient
    visit: int
    date: dt.date
    time: str  # HHMMSS
    accession: str
    referring: str
    operator: str
    followup: FollowUp
    findings: dict[str, Finding] = field(default_factory=dict)

    @property
    def age_years(self) -> int:
        """Completed years at the study date, as a hospital records them."""
        b, d = self.patient.birth_date, self.date
        return d.year - b.year - ((d.month, d.day) < (b.month, b.day))

    @property
    def age_group(self) -> int:
        return age_group(self.age_years)

    def labels(self) -> np.ndarray:
        """0/1 per finding, in `attributes.FINDINGS` order."""
        return np.array([name in self.findings for name in FINDINGS], dtype=np.uint8)


def assign_splits(n_patients: int, fractions: tuple[float, float], seed: int, site: int) -> list[str]:
    """Split of each patient index: a seeded shuffle, then train / val / test blocks.

    `fractions` are (val, test). With three or more patients every split gets at least one.
    """
    val_f, test_f = fractions
    n_val = int(round(val_f * n_patients))
    n_test = int(round(test_f * n_patients))
    if n_patients >= 3:
        n_val = max(n_val, 1 if val_f > 0 else 0)
        n_test = max(n_test, 1 if test_f > 0 else 0)
    n_train = n_patients - n_val - n_test
    if n_train < 1 and n_patients >= 1:
        raise ValueError(f"{n_patients} patients leave none for training with fractions {fractions}")
    order = stream(seed, site, _SPLIT).permutation(n_patients)
    splits = [""] * n_patients
    for rank, index in enumerate(order):
        splits[index] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return splits


def patient_ids(site: SiteProfile, n_patients: int, seed: int) -> list[str]:
    """Medical record numbers: 8 digits, the site's two first, unique within the federation."""
    rng = stream(seed, site.index, _IDS)
    seen: set[int] = set()
    out = []
    while len(out) < n_patients:
        number = int(rng.integers(0, 1_000_000))
        if number not in seen:
            seen.add(number)
            out.append(f"{(site.index + 1) % 100:02d}{number:06d}")
    return out


def make_patient(site: SiteProfile, index: int, patient_id: str, split: str, seed: int) -> Patient:
    """Draw one patient's sex, age and name from the site's demographics."""
    rng = stream(seed, site.index, index, _DEMOGRAPHICS)
    sex = int(rng.random() < site.female_fraction)
    age = float(np.clip(rng.normal(site.age_mean, site.age_sd), 18.0, 95.0))
    first = site.first_study + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
    birth = first - dt.timedelta(days=int(age * 365.25))
    return Patient(
        site=site,
        index=index,
        patient_id=patient_id,
        name=patient_name(rng, sex),
        sex=sex,
        birth_date=birth,
        first_age=(first - birth).days / 365.25,
        split=split,
    )


def make_anatomy(patient: Patient, seed: int, texture_size: int) -> Anatomy:
    """The patient's persistent anatomy (their chest biometrics)."""
    rng = stream(seed, patient.site.index, patient.index, _ANATOMY)
    return sample_anatomy(rng, patient.first_age, patient.sex, texture_size)


def finding_timeline(
    patient: Patient, anatomy: Anatomy, n_visits: int, seed: int
) -> list[dict[str, Finding]]:
    """Which findings each of the patient's films shows, and how they look."""
    rng = stream(seed, patient.site.index, patient.index, _FINDINGS)
    visits: list[dict[str, Finding]] = [{} for _ in range(n_visits)]
    for name in FINDINGS:
        p = patient.site.prevalence(name, anatomy.age_factor)
        persist = PERSISTENCE[name in CHRONIC]
        onset = p * (1.0 - persist) / max(1e-9, 1.0 - p)  # keeps the prevalence at p
        present = rng.random() < p
        look = sample_finding(name, rng, anatomy)
        for k in range(n_visits):
            if k > 0:
                was = present
                present = rng.random() < (persist if was else onset)
                if present and not was and name not in CHRONIC:
                    look = sample_finding(name, rng, anatomy)  # a new episode, elsewhere
            if present:
                visits[k][name] = look
    return visits


def make_studies(patient: Patient, anatomy: Anatomy, n_visits: int, seed: int) -> list[Study]:
    """The patient's examinations, in date order."""
    timeline = finding_timeline(patient, anatomy, n_visits, seed)
    studies = []
    date = patient.birth_date + dt.timedelta(days=int(round(patient.first_age * 365.25)))
    for visit in range(n_visits):
        rng = stream(seed, patient.site.index, patient.index, _VISIT, visit)
        if visit > 0:
            date = date + dt.timedelta(days=int(rng.integers(14, 400)))
        seconds = int(rng.integers(7 * 3600, 22 * 3600))
        site = patient.site
        studies.append(
            Study(
                patient=patient,
                visit=visit,
                date=date,
                time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
                accession=f"{site.station.split('-')[0]}{patient.index:05d}{visit:02d}",
                referring=staff_name(rng),
                operator=staff_name(rng),
                followup=sample_followup(rng, site.ap_fraction, site.electrode_rate),
                findings=timeline[visit],
            )
        )
    return studies


def visit_rng(study: Study, seed: int) -> np.random.Generator:
    """Random stream for this film's detector noise and shutters."""
    p = study.patient
    return stream(seed, p.site.index, p.index, _VISIT, study.visit, 1)
