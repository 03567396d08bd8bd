"""`CXRRecord`: what is known about one image before it is decoded (file, identity, labels, split)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from privdiff_core.attributes import NUM_FINDINGS, UNKNOWN

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class CXRRecord:
    """One image of a data set, as its layout describes it.

    `labels` and `label_mask` follow `attributes.FINDINGS`: a label is 1.0 or 0.0 where its mask
    is True; where the mask is False the label is unknown and stored as 0.0. `split` is one of
    `SPLITS` (every layout assigns one, per patient). `site` names the site folder of a pooled
    federation (None elsewhere).
    """

    path: Path
    uid: str
    patient_id: str
    labels: tuple[float, ...]
    label_mask: tuple[bool, ...]
    split: str
    age_group: int = UNKNOWN
    sex: int = UNKNOWN
    site: str | None = None

    def __post_init__(self) -> None:
        if len(self.labels) != NUM_FINDINGS or len(self.label_mask) != NUM_FINDINGS:
            raise ValueError(f"{self.path}: labels and label_mask need {NUM_FINDINGS} entries each")
        if self.split not in SPLITS:
            raise ValueError(f"{self.path}: split {self.split!r} is not one of {', '.join(SPLITS)}")
