"""A whole synthetic federation: in memory (`iter_federation`, `generate_arrays`) or on disk.

On disk (`generate_federation`) it is the site-folder layout of docs/architecture.md,
Contract 1: one folder per site with `labels.csv` and `images/<PatientID>/<SOPInstanceUID>.dcm`,
plus `federation.json` recording how it was made. The folder appears whole or not at all: it
is written under a temporary name next to the target and renamed at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from privdiff_core.attributes import FINDINGS
from privdiff_core.errors import PrivdiffError
from privdiff_core.synth.cohort import (
    SPLITS,
    Patient,
    Study,
    assign_splits,
    make_anatomy,
    make_patient,
    make_studies,
    patient_ids,
    visit_rng,
)
from privdiff_core.synth.dicom import study_uids, write_dicom
from privdiff_core.synth.pathology import RENDERED
from privdiff_core.synth.render import render_density
from privdiff_core.synth.scanner import acquire
from privdiff_core.synth.sites import SiteProfile, site_profile

GENERATOR_VERSION = "1.1"  # bump when the same seed would draw different images
LABEL_COLUMNS = ("sop_instance_uid", "file", "split", *FINDINGS)
MAX_SIZE = 2048


class SynthError(PrivdiffError, ValueError):
    """Bad generator settings or an output folder that must not be touched."""


@dataclass(frozen=True)
class SynthParams:
    """What to generate (the `synth:` section of the configs)."""

    sites: int = 3
    patients: int = 200  # per site
    images_per_patient: int = 4
    size: int = 64
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        checks = [
            (self.sites >= 1, f"sites must be >= 1, got {self.sites}"),
            (self.patients >= 1, f"patients (per site) must be >= 1, got {self.patients}"),
            (self.images_per_patient >= 1, f"images_per_patient must be >= 1, got {self.images_per_patient}"),
            (32 <= self.size <= MAX_SIZE, f"size must be between 32 and {MAX_SIZE} pixels, got {self.size}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (
                0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1,
                "val_fraction and test_fraction must lie in [0, 1)",
            ),
            (
                self.val_fraction + self.test_fraction < 1,
                f"val_fraction + test_fraction must leave patients for training, got "
                f"{self.val_fraction} + {self.test_fraction}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SynthError(message)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SynthParams:
        """From a config section; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SynthError(
                f"unknown synth setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        try:
            typed = {
                k: (float(v) if k.endswith("fraction") else int(v))
                for k, v in values.items()
                if v is not None
            }
        except (TypeError, ValueError) as err:
            raise SynthError(f"synth settings must be numbers: {err}") from err
        return cls(**typed)

    @property
    def texture_size(self) -> int:
        """Resolution of each patient's vessel layer: the image's, capped (it is smooth)."""
        return int(min(self.size, 192))


@dataclass(frozen=True)
class SynthSample:
    """One generated film with everything known about it."""

    image: np.ndarray  # (size, size) float32 in [0, 1], MONOCHROME2 sense (bone bright)
    study: Study
    sop_instance_uid: str

    @property
    def patient(self) -> Patient:
        return self.study.patient

    @property
    def labels(self) -> np.ndarray:
        return self.study.labels()


def site_patients(params: SynthParams, site: SiteProfile) -> list[Patient]:
    """All patients of one site, with their split."""
    splits = assign_splits(
        params.patients, (params.val_fraction, params.test_fraction), params.seed, site.index
    )
    ids = patient_ids(site, params.patients, params.seed)
    return [make_patient(site, k, ids[k], splits[k], params.seed) for k in range(params.patients)]


def render_patient(patient: Patient, params: SynthParams) -> list[SynthSample]:
    """Every film of one patient."""
    anatomy = make_anatomy(patient, params.seed, params.texture_size)
    samples = []
    for study in make_studies(patient, anatomy, params.images_per_patient, params.seed):
        density = render_density(anatomy, study.followup, study.findings, params.size)
        image = acquire(density, patient.site, study.followup, visit_rng(study, params.seed))
        samples.append(
            SynthSample(image=image, study=study, sop_instance_uid=study_uids(study, params.seed)[2])
        )
    return samples


def iter_federation(params: SynthParams, progress: bool = False) -> Iterator[SynthSample]:
    """Every film of the federation, site by site, patient by patient, visit by visit."""
    total = params.sites * params.patients * params.images_per_patient
    with tqdm(total=total, desc="synth", unit="img", disable=not progress) as bar:
        for s in range(params.sites):
            for patient in site_patients(params, site_profile(s, params.seed)):
                for sample in render_patient(patient, params):
                    bar.update(1)
                    yield sample


@dataclass
class SynthArrays:
    """A federation held in memory as stacked arrays (for tests, benchmarks and demos)."""

    images: np.ndarray  # (N, S, S) float32 in [0, 1]
    patient_ids: list[str]
    site: np.ndarray  # (N,) int
    age_group: np.ndarray  # (N,) int
    age_years: np.ndarray  # (N,) int
    sex: np.ndarray  # (N,) int, 0 = M, 1 = F
    labels: np.ndarray  # (N, 14) uint8
    split: np.ndarray  # (N,) str
    view: np.ndarray  # (N,) str, PA / AP

    def to_tensors(self):
        """The images in [-1, 1] with their labels, every label known, as a `CXRTensors` (what
        training and the anonymizer take)."""
        import torch

        from privdiff_core.data import CXRTensors

        labels = torch.from_numpy(self.labels.astype(np.float32))
        return CXRTensors(
            image=torch.from_numpy(self.images).unsqueeze(1) * 2 - 1,
            age_group=torch.from_numpy(self.age_group).long(),
            sex=torch.from_numpy(self.sex).long(),
            labels=labels,
            label_mask=torch.ones_like(labels, dtype=torch.bool),
            patient_ids=list(self.patient_ids),
            uids=[str(i) for i in range(len(labels))],
        )

    def select(self, mask: np.ndarray) -> SynthArrays:
        """The rows where `mask` is true."""
        index = np.flatnonzero(mask)
        return SynthArrays(
            images=self.images[index],
            patient_ids=[self.patient_ids[i] for i in index],
            site=self.site[index],
            age_group=self.age_group[index],
            age_years=self.age_years[index],
            sex=self.sex[index],
            labels=self.labels[index],
            split=self.split[index],
            view=self.view[index],
        )


def generate_arrays(params: SynthParams, progress: bool = False) -> SynthArrays:
    """The whole federation as arrays, without touching the disk."""
    samples = list(iter_federation(params, progress))
    return SynthArrays(
        images=np.stack([s.image for s in samples]).astype(np.float32),
        patient_ids=[f"{s.patient.site.name}/{s.patient.patient_id}" for s in samples],
        site=np.array([s.patient.site.index for s in samples]),
        age_group=np.array([s.study.age_group for s in samples]),
        age_years=np.array([s.study.age_years for s in samples]),
        sex=np.array([s.patient.sex for s in samples]),
        labels=np.stack([s.labels for s in samples]),
        split=np.array([s.patient.split for s in samples]),
        view=np.array([s.study.followup.view for s in samples]),
    )


# ---------------------------------------------------------------------------- on disk


def _write_patient(args: tuple[Patient, SynthParams, str]) -> list[tuple[str, str, str, list[int]]]:
    """Render and write one patient's films; returns their labels.csv rows (worker-safe)."""
    patient, params, site_dir = args
    rows = []
    for sample in render_patient(patient, params):
        relative = f"images/{patient.patient_id}/{sample.sop_instance_uid}.dcm"
        write_dicom(Path(site_dir) / relative, sample.image, sample.study, params.seed)
        rows.append((sample.sop_instance_uid, relative, patient.split, sample.labels.tolist()))
    return rows


def _labels_csv(rows: list[tuple[str, str, str, list[int]]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for uid, relative, split, labels in rows:
        writer.writerow([uid, relative, split, *labels])
    return buffer.getvalue()


def _package_version() -> str:
    try:
        return version("privdiff")
    except PackageNotFoundError:
        return "unknown"


def _site_summary(site: SiteProfile, patients: list[Patient], rows: list) -> dict[str, Any]:
    labels = np.array([r[3] for r in rows], dtype=np.float64).reshape(len(rows), len(FINDINGS))
    return {
        "folder": site.name,
        "institution": site.institution,
        "modality": site.modality,
        "photometric_interpretation": site.photometric,
        "bits_stored": site.bits_stored,
        "rescale": list(site.rescale) if site.rescale else None,
        "ap_fraction": site.ap_fraction,
        "patients": len(patients),
        "images": len(rows),
        "patients_per_split": {s: sum(p.split == s for p in patients) for s in SPLITS},
        "female_fraction": round(float(np.mean([p.sex for p in patients])), 4),
        "mean_age": round(float(np.mean([p.first_age for p in patients])), 2),
        "finding_prevalence": {name: round(float(labels[:, k].mean()), 4) for k, name in enumerate(FINDINGS)},
    }


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse to replace a non-empty folder unless asked, and never one we did not write."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"{out} is not empty; choose another folder or pass --overwrite to replace it")
        if not (out / "federation.json").is_file():
            raise SynthError(
                f"{out} is not empty and holds no federation.json: it was not written by `privdiff synth`, "
                "so --overwrite will not delete it"
            )


def generate_federation(
    out: str | Path,
    params: SynthParams,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Write the federation to `out` (Contract 1) and return what federation.json records.

    `workers` > 1 renders patients in parallel processes; the bytes written are identical
    because every patient draws from its own keyed random streams.
    """
    out = Path(out)
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        summary = _write_all(tmp, params, progress, workers)
        (tmp / "federation.json").write_text(json.dumps(summary, indent=2) + "\n")
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _write_all(root: Path, params: SynthParams, progress: bool, workers: int) -> dict[str, Any]:
    sites = [site_profile(s, params.seed) for s in range(params.sites)]
    cohorts = [site_patients(params, site) for site in sites]
    jobs = [
        (p, params, str(root / site.name))
        for site, patients in zip(sites, cohorts, strict=True)
        for p in patients
    ]
    total = len(jobs) * params.images_per_patient
    results: list[list] = []
    with tqdm(total=total, desc="synth", unit="img", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for rows in pool.map(_write_patient, jobs, chunksize=4):
                    results.append(rows)
                    bar.update(len(rows))
        else:
            for job in jobs:
                results.append(_write_patient(job))
                bar.update(params.images_per_patient)
    summaries = []
    for site, patients in zip(sites, cohorts, strict=True):
        rows = [
            row
            for (p, _, _), res in zip(jobs, results, strict=True)
            if p.site.index == site.index
            for row in res
        ]
        (root / site.name).mkdir(exist_ok=True)
        (root / site.name / "labels.csv").write_text(_labels_csv(rows))
        summaries.append(_site_summary(site, patients, rows))
    return {
        "format": "privdiff-federation",
        "format_version": 1,
        "generator": "privdiff synth",
        "generator_version": GENERATOR_VERSION,
        "privdiff_version": _package_version(),
        "arguments": asdict(params),
        "findings": list(FINDINGS),
        "rendered_findings": list(RENDERED),
        "labels": "every finding of every image is labelled 0 or 1 (none unknown)",
        "images": total,
        "sites": summaries,
    }


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old one is removed only after the swap."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        else:
            out.rmdir()
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
