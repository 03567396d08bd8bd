"""Toy cohorts for the evaluation tests: small images whose patients, ages, sexes and findings are
all visible, so that attackers trained for seconds have something real to find."""

from __future__ import annotations

import numpy as np
import torch

from privdiff_core.attributes import FINDINGS, NUM_FINDINGS
from privdiff_core.evaluation.protocol import Cohort, EvalSplits

CARDIO, EFFUSION = FINDINGS.index("Cardiomegaly"), FINDINGS.index("Effusion")


def toy_cohort(n_patients: int, per_patient: int, size: int = 32, seed: int = 0, prefix: str = "p") -> Cohort:
    """Each patient: a fixed pattern of blobs (identity), an age group (brightness) and a sex
    (a side bar); each image: a small shift, noise, and two findings drawn per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, ids, ages, sexes, labels, masks = [], [], [], [], [], []
    for p in range(n_patients):
        centers = rng.uniform(0.15, 0.85, size=(4, 2))
        widths = rng.uniform(0.04, 0.1, size=4)
        age, sex = int(rng.integers(0, 4)), int(rng.integers(0, 2))
        for _ in range(per_patient):
            shift = rng.normal(0, 0.01, size=2)
            img = np.zeros((size, size))
            for (cy, cx), w in zip(centers, widths, strict=True):
                img += np.exp(-(((yy - cy - shift[0]) ** 2 + (xx - cx - shift[1]) ** 2) / (2 * w**2)))
            img += 0.15 * age
            if sex:
                img[:, : size // 8] += 0.6
            y = np.zeros(NUM_FINDINGS, dtype=np.float32)
            y[CARDIO], y[EFFUSION] = rng.random() < 0.4, rng.random() < 0.4
            if y[CARDIO]:
                img += 0.8 * np.exp(-(((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / (2 * 0.12**2)))
            if y[EFFUSION]:
                img[int(0.8 * size) :, :] += 0.7
            img += rng.normal(0, 0.05, size=img.shape)
            images.append(np.clip(img / 2.0 - 1.0, -1, 1))
            ids.append(f"{prefix}{p}")
            ages.append(age)
            sexes.append(sex)
            labels.append(y)
            mask = np.zeros(NUM_FINDINGS, dtype=bool)
            mask[[CARDIO, EFFUSION]] = True
            masks.append(mask)
    return Cohort(
        images=torch.tensor(np.stack(images)[:, None], dtype=torch.float32),
        patient_ids=tuple(ids),
        age_group=torch.tensor(ages),
        sex=torch.tensor(sexes),
        labels=torch.tensor(np.stack(labels)),
        label_mask=torch.tensor(np.stack(masks)),
    )


def toy_splits(seed: int = 0, size: int = 32) -> EvalSplits:
    return EvalSplits(
        train=toy_cohort(40, 4, size, seed, "tr"),
        val=toy_cohort(12, 3, size, seed + 1, "va"),
        test=toy_cohort(20, 3, size, seed + 2, "te"),
    )


def synth_splits(
    sites: int = 2, patients: int = 40, images_per_patient: int = 3, size: int = 32, seed: int = 0
):
    """Realistic test data: the synthetic federation's phantoms (in memory), split as it splits them."""
    from privdiff_core.synth import SynthParams, generate_arrays

    arrays = generate_arrays(
        SynthParams(
            sites=sites, patients=patients, images_per_patient=images_per_patient, size=size, seed=seed
        )
    )
    cohorts = {}
    for split in ("train", "val", "test"):
        part = arrays.select(arrays.split == split)
        cohorts[split] = Cohort(
            images=torch.from_numpy(part.images[:, None] * 2.0 - 1.0).float(),
            patient_ids=tuple(part.patient_ids),
            age_group=torch.from_numpy(part.age_group).long(),
            sex=torch.from_numpy(part.sex).long(),
            labels=torch.from_numpy(part.labels).float(),
            label_mask=torch.ones(part.labels.shape, dtype=torch.bool),
        )
    return EvalSplits(**cohorts)
