"""`CXRDataset` (Contract 2 in docs/architecture.md) and `open_dataset`, its front door.

A sample is a dict with exactly these keys:

| key          | value                                                                  |
| ------------ | ---------------------------------------------------------------------- |
| `image`      | float32 tensor (1, size, size) in [-1, 1] (signed grey, bone bright)   |
| `patient_id` | str (site-prefixed when several sites are pooled)                      |
| `age_group`  | int, `attributes.UNKNOWN` (-1) when unknown                            |
| `sex`        | int (0 = M, 1 = F), -1 when unknown                                    |
| `labels`     | float32 tensor (14,), 0/1 (0 where unknown)                            |
| `label_mask` | bool tensor (14,), True where the label is known                       |
| `uid`        | str: SOP Instance UID, or the image file name / CSV path               |

`load_tensors()` decodes every image once into a `CXRTensors` (stacked, same fields) for
in-memory training on small data. The demo federation (2400 DICOMs at 64x64) opens in ~6 s
(one header read per file: identity, age and sex) and decodes in ~12 s on two busy cores
(benchmarks/data_decode.py); small enough that no on-disk cache of decoded images is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from privdiff_core.attributes import NUM_FINDINGS
from privdiff_core.data.errors import DatasetError
from privdiff_core.data.grey import to_signed
from privdiff_core.data.images import read_image
from privdiff_core.data.layouts import detect_layout, read_records
from privdiff_core.data.records import SPLITS, CXRRecord


@dataclass
class CXRTensors:
    """A decoded data set in memory: the sample fields stacked along a first axis of length N.

    `image` (N, 1, S, S) float32 in [-1, 1]; `age_group`, `sex` (N,) int64 (-1 unknown);
    `labels` (N, 14) float32; `label_mask` (N, 14) bool; `patient_ids`, `uids`: N strings.
    """

    image: torch.Tensor
    age_group: torch.Tensor
    sex: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor
    patient_ids: list[str]
    uids: list[str]

    def __len__(self) -> int:
        return len(self.patient_ids)

    @property
    def images(self) -> torch.Tensor:
        """The same tensor as `image` (the plural reads better for a batch)."""
        return self.image

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> CXRTensors:
        """The rows at `indices`, in that order (tensors are indexed, not copied lazily)."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        picked = index.tolist()
        return CXRTensors(
            image=self.image[index],
            age_group=self.age_group[index],
            sex=self.sex[index],
            labels=self.labels[index],
            label_mask=self.label_mask[index],
            patient_ids=[self.patient_ids[i] for i in picked],
            uids=[self.uids[i] for i in picked],
        )

    def to(self, device: str | torch.device) -> CXRTensors:
        """The tensors moved to `device` (the id lists are shared)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return CXRTensors(**moved, patient_ids=self.patient_ids, uids=self.uids)


class CXRDataset(Dataset):
    """Images of one data folder as Contract 2 samples, decoded on access (see module docstring)."""

    def __init__(self, records: Sequence[CXRRecord], size: int, root: Path | None = None, layout: str = ""):
        if size < 1:
            raise ValueError(f"image size must be a positive number of pixels, got {size}")
        self.records: list[CXRRecord] = list(records)
        self.size = size
        self.root = root
        self.layout = layout

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {
            "image": self.image(index),
            "patient_id": record.patient_id,
            "age_group": record.age_group,
            "sex": record.sex,
            "labels": torch.tensor(record.labels, dtype=torch.float32),
            "label_mask": torch.tensor(record.label_mask, dtype=torch.bool),
            "uid": record.uid,
        }

    def image(self, index: int) -> torch.Tensor:
        """The decoded image of sample `index`: (1, size, size) float32 in [-1, 1]."""
        unit = read_image(self.records[index].path, self.size)
        return torch.from_numpy(to_signed(unit)).unsqueeze(0)

    @property
    def patient_ids(self) -> list[str]:
        return [record.patient_id for record in self.records]

    def split_counts(self) -> dict[str, int]:
        """Number of images per split."""
        counts = Counter(record.split for record in self.records)
        return {name: counts.get(name, 0) for name in SPLITS}

    def split(self, name: str) -> CXRDataset:
        """The images of one split ("train", "val", "test"); an empty split is an error."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        chosen = [record for record in self.records if record.split == name]
        if not chosen:
            counts = ", ".join(f"{k} {v}" for k, v in self.split_counts().items())
            raise DatasetError(f"{self.root or 'dataset'}: no images in split {name!r} ({counts})")
        return CXRDataset(chosen, self.size, self.root, self.layout)

    def subset(self, indices: Sequence[int]) -> CXRDataset:
        """The samples at `indices`, in that order."""
        return CXRDataset([self.records[i] for i in indices], self.size, self.root, self.layout)

    def load_tensors(self, progress: bool = True) -> CXRTensors:
        """Decode every image once into one `CXRTensors`, with a progress bar.

        A plain loop: decoding small DICOMs is dominated by per-file Python work (pydicom
        parsing), which worker processes only multiply on a 2-core machine
        (benchmarks/data_decode.py measures it).
        """
        n = len(self.records)
        image = torch.empty((n, 1, self.size, self.size), dtype=torch.float32)
        desc = f"decoding {self.root.name if self.root else 'images'} ({self.size}px)"
        for index in tqdm(range(n), desc=desc, disable=not progress, leave=False, unit="img"):
            image[index] = self.image(index)
        records = self.records
        return CXRTensors(
            image=image,
            age_group=torch.tensor([r.age_group for r in records], dtype=torch.long),
            sex=torch.tensor([r.sex for r in records], dtype=torch.long),
            labels=torch.tensor([r.labels for r in records], dtype=torch.float32).reshape(n, NUM_FINDINGS),
            label_mask=torch.tensor([r.label_mask for r in records], dtype=torch.bool).reshape(
                n, NUM_FINDINGS
            ),
            patient_ids=[r.patient_id for r in records],
            uids=[r.uid for r in records],
        )


def open_dataset(
    root: str | Path, size: int, split: str | None = None, *, frontal_only: bool = True, progress: bool = True
) -> CXRDataset:
    """Open a data folder of any known layout (detected) as a `CXRDataset` of `size` x `size` images.

    Layouts: a site folder or a federation folder of sites (docs/architecture.md, Contract 1),
    ChestX-ray14, CheXpert (`frontal_only` keeps its frontal views). `split` keeps one of
    "train", "val", "test". `progress` shows a bar while DICOM headers are read (site layouts:
    identity, age and sex live there). Raises `DatasetError` for an unknown layout, missing or malformed
    label files, a referenced image that does not exist, or no images at all.
    """
    root = Path(root)
    layout = detect_layout(root)
    records = read_records(root, layout, frontal_only=frontal_only, progress=progress)
    if not records:
        raise DatasetError(f"{root}: the {layout} data set lists no images")
    dataset = CXRDataset(records, size, root=root, layout=layout)
    return dataset.split(split) if split is not None else dataset
