"""Patient-level splits for layouts that do not ship one: stable, and never splitting a patient.

A patient's split is drawn from a SHA-256 of its id, so it does not depend on row order, on
which other patients are present, or on the Python process (unlike `hash()`).
"""

from __future__ import annotations

import hashlib

from privdiff_core.data.records import SPLITS

# train / val / test fractions of patients where a layout has no split of its own.
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)
# Fraction of an official training set's patients set aside as "val" (ChestX-ray14, CheXpert).
VAL_FRACTION_OF_TRAIN = 0.1


def patient_unit_draw(patient_id: str) -> float:
    """A number in [0, 1) fixed by the patient id alone."""
    digest = hashlib.sha256(patient_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def patient_split(patient_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """ "train", "val" or "test" for a patient, with the given fractions of all patients."""
    draw = patient_unit_draw(patient_id) * sum(fractions)
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if draw < edge:
            return name
    return SPLITS[-1]


def train_or_val(patient_id: str, val_fraction: float = VAL_FRACTION_OF_TRAIN) -> str:
    """Split a patient of an official training set into "train" or "val"."""
    return "val" if patient_unit_draw(patient_id) < val_fraction else "train"
