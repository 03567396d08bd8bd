"""The evaluation protocol's data side: patient-disjoint cohorts, subsampling by patient, seeds.

PriCheXy-Net (Packhäuser et al. 2023) splits at the patient level: a patient whose images train
an attacker never appears among the test images, otherwise a verifier could "re-identify" by
memorising. Everything here keeps whole patients together and refuses overlapping splits.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privdiff_core.attributes import NUM_FINDINGS
from privdiff_core.errors import PrivdiffError

SPLITS = ("train", "val", "test")


class ProtocolError(PrivdiffError, ValueError):
    """Data that would make the evaluation dishonest or impossible (overlap, too few patients)."""


def derive_seed(*keys: int | str) -> int:
    """A 31-bit seed from a tuple of keys (base seed, run index, purpose name, ...).

    Different purposes (pairs, attacker init, anonymizer noise) get independent streams, so
    changing the number of runs or methods never shifts another component's randomness.
    """
    material = "/".join(str(k) for k in keys).encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Cohort:
    """One split's images and attributes, in memory (Contract 2 fields, stacked).

    images: (N, 1, S, S) float32 in [-1, 1]; age_group, sex: (N,) int64 with -1 unknown;
    labels: (N, 14) float32 0/1; label_mask: (N, 14) bool, True where the label is known.
    """

    images: torch.Tensor
    patient_ids: tuple[str, ...]
    age_group: torch.Tensor
    sex: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ProtocolError(f"images must be (N, 1, S, S); got {tuple(self.images.shape)}")
        for name in ("age_group", "sex"):
            if tuple(getattr(self, name).shape) != (n,):
                raise ProtocolError(f"{name} must have shape ({n},)")
        for name in ("labels", "label_mask"):
            if tuple(getattr(self, name).shape) != (n, NUM_FINDINGS):
                raise ProtocolError(f"{name} must have shape ({n}, {NUM_FINDINGS})")
        if len(self.patient_ids) != n:
            raise ProtocolError(f"{len(self.patient_ids)} patient ids for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def patients(self) -> set[str]:
        return set(self.patient_ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> Cohort:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return Cohort(
            images=self.images[idx],
            patient_ids=tuple(self.patient_ids[i] for i in idx.tolist()),
            age_group=self.age_group[idx],
            sex=self.sex[idx],
            labels=self.labels[idx],
            label_mask=self.label_mask[idx],
        )

    def with_images(self, images: torch.Tensor) -> Cohort:
        """The same people and labels with other pixels (their anonymized versions)."""
        if images.shape != self.images.shape:
            raise ProtocolError(
                f"anonymized images have shape {tuple(images.shape)}, expected {tuple(self.images.shape)}"
            )
        return Cohort(images, self.patient_ids, self.age_group, self.sex, self.labels, self.label_mask)

    @classmethod
    def from_tensors(cls, tensors) -> Cohort:
        """From `privdiff_core.data`'s `CXRTensors` (Contract 2)."""
        return cls(
            images=tensors.images.float(),
            patient_ids=tuple(str(p) for p in tensors.patient_ids),
            age_group=tensors.age_group.long(),
            sex=tensors.sex.long(),
            labels=tensors.labels.float(),
            label_mask=tensors.label_mask.bool(),
        )

    def fingerprint(self) -> str:
        """Content hash (pixels, ids, attributes): cached judges are reused only on identical data."""
        h = hashlib.sha256()
        for t in (self.images, self.age_group, self.sex, self.labels, self.label_mask):
            h.update(t.contiguous().numpy().tobytes())
        h.update("\n".join(self.patient_ids).encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class EvalSplits:
    """Patient-disjoint train / val / test cohorts (checked on construction)."""

    train: Cohort
    val: Cohort
    test: Cohort
    # The whole val split when `val` is a capped sample of it: real films of patients no model saw,
    # which only calibrate the memorization threshold (embedding them costs little, anonymizing
    # them is what the cap saves). None: `val` is the whole split.
    calibration: Cohort | None = None

    def __post_init__(self) -> None:
        check_patient_disjoint({"train": self.train, "val": self.val, "test": self.test})
        for name in SPLITS:
            cohort = getattr(self, name)
            if cohort.images.shape[1:] != self.train.images.shape[1:]:
                raise ProtocolError("all splits must have the same image size")
            require_pairs_possible(cohort.patient_ids, name)
        if self.calibration is not None:
            check_patient_disjoint({"train": self.train, "test": self.test, "calibration": self.calibration})
            if self.calibration.images.shape[1:] != self.train.images.shape[1:]:
                raise ProtocolError("all splits must have the same image size")

    @property
    def memorization_reference(self) -> Cohort:
        """The real unseen films that set the memorization threshold: as many as there are."""
        return self.val if self.calibration is None else self.calibration

    def fingerprint(self) -> str:
        cohorts = (self.train, self.val, self.test, *([] if self.calibration is None else [self.calibration]))
        return hashlib.sha256("".join(c.fingerprint() for c in cohorts).encode()).hexdigest()[:16]

    def summary(self) -> dict:
        return {
            name: {"images": len(getattr(self, name)), "patients": len(getattr(self, name).patients)}
            for name in SPLITS
        }


def check_patient_disjoint(cohorts: dict[str, Cohort]) -> None:
    """Raise if any patient appears in two splits (the attacker would be tested on people it trained on)."""
    names = list(cohorts)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            shared = cohorts[names[a]].patients & cohorts[names[b]].patients
            if shared:
                example = ", ".join(sorted(shared)[:3])
                raise ProtocolError(
                    f"{len(shared)} patient(s) appear in both {names[a]!r} and {names[b]!r} "
                    f"(e.g. {example}); splits must be patient-disjoint"
                )


def require_pairs_possible(patient_ids: Sequence[str], split: str) -> None:
    """Balanced verification pairs need a patient with two images and two distinct patients."""
    counts: dict[str, int] = defaultdict(int)
    for pid in patient_ids:
        counts[pid] += 1
    if len(counts) < 2 or max(counts.values(), default=0) < 2:
        raise ProtocolError(
            f"the {split} split has {len(patient_ids)} images of {len(counts)} patients: verification pairs "
            "need at least two patients and one patient with two or more images"
        )


def split_by_patient(
    patient_ids: Sequence[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Indices of a random patient-level train/val/test split (for data that comes without one)."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ProtocolError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    patients = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(patients))
    n_train = round(fractions[0] * len(patients))
    n_val = round(fractions[1] * len(patients))
    assignment: dict[str, str] = {}
    for rank, k in enumerate(order):
        assignment[patients[k]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    ids = np.asarray(patient_ids)
    return {name: np.flatnonzero([assignment[p] == name for p in ids]) for name in SPLITS}


def subsample_patients(cohort: Cohort, max_images: int | None, seed: int) -> Cohort:
    """At most `max_images` images, taking whole patients in random order (keeps positive pairs).

    Patients with two or more images are taken first so that a small budget still yields
    same-patient pairs; within that order the choice is random.
    """
    if max_images is None or max_images <= 0 or len(cohort) <= max_images:
        return cohort
    by_patient: dict[str, list[int]] = defaultdict(list)
    for index, pid in enumerate(cohort.patient_ids):
        by_patient[pid].append(index)
    rng = np.random.default_rng(seed)
    patients = sorted(by_patient)
    order = rng.permutation(len(patients))
    ranked = sorted(order, key=lambda k: len(by_patient[patients[k]]) < 2)  # stable: repeated first
    chosen: list[int] = []
    for k in ranked:
        images = by_patient[patients[k]]
        if len(chosen) + len(images) > max_images:
            continue
        chosen.extend(images)
    return cohort.subset(sorted(chosen))
