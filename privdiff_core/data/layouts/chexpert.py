"""The CheXpert layout (Irvin et al. 2019), as `CheXpert-v1.0` / `CheXpert-v1.0-small` unpack.

```
CheXpert-v1.0-small/          the CheXpert root (holds the CSVs)
  train.csv, valid.csv        Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices
  train/patient00001/study1/view1_frontal.jpg
```

Paths in the CSVs start with the root folder's own name (`CheXpert-v1.0-small/train/...`), i.e.
they are relative to the folder that *contains* the root. They are also accepted relative to
the root itself (`train/patient00001/...`), and with a renamed root folder. `open_dataset` takes
either the root or the folder containing it. The patient id is the path's `patientNNNNN` part.

Only frontal views are read by default (`Frontal/Lateral` == "Frontal"): the models are trained
on frontal radiographs, as in the paper. Splits: `valid.csv` rows are "test" (CheXpert's labelled
hold-out; its test set is not in the download); `train.csv` rows are "train", except a stable
10% of patients set aside as "val" (`splits.train_or_val`). Sex "Male"/"Female" (else unknown),
age in years.

Label mapping onto `attributes.FINDINGS` (ChestX-ray14's names): only the CheXpert
observations that are the same finding are used,

    Atelectasis <- Atelectasis          Pneumonia     <- Pneumonia
    Cardiomegaly <- Cardiomegaly        Pneumothorax  <- Pneumothorax
    Effusion    <- Pleural Effusion     Consolidation <- Consolidation
    Edema       <- Edema

Each is known (mask True) where CheXpert says 1.0 (positive) or 0.0 (negative); uncertain (-1.0)
and blank (not mentioned) are unknown (mask False). The other seven findings (Infiltration, Mass,
Nodule, Emphysema, Fibrosis, Pleural_Thickening, Hernia) have no CheXpert counterpart and are
always unknown; CheXpert's broader observations (Lung Opacity, Lung Lesion, Enlarged
Cardiomediastinum, Pleural Other, Fracture, Support Devices, No Finding) are not used.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from privdiff_core.attributes import FINDINGS, age_group, parse_dicom_age, sex_index
from privdiff_core.data.errors import DatasetError
from privdiff_core.data.records import CXRRecord
from privdiff_core.data.splits import train_or_val
from privdiff_core.data.tables import read_table

CSV_SPLITS: dict[str, str] = {"train.csv": "train", "valid.csv": "test"}
REQUIRED_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral")
# Our finding name -> the CheXpert column that is the same finding.
FINDING_COLUMNS: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
}
_POSITIVE, _NEGATIVE, _UNCERTAIN = 1.0, 0.0, -1.0
_PATIENT = re.compile(r"^patient\d+$")


def _has_chexpert_csv(folder: Path) -> bool:
    for name in CSV_SPLITS:
        path = folder / name
        if path.is_file():
            with path.open(encoding="utf-8-sig") as handle:
                header = handle.readline()
            if "Path" in header and "Frontal/Lateral" in header:
                return True
    return False


def find_chexpert_root(root: Path) -> Path | None:
    """The CheXpert root: `root` itself or its one sub-folder that holds train.csv/valid.csv."""
    if _has_chexpert_csv(root):
        return root
    children = (
        [p for p in sorted(root.iterdir()) if p.is_dir() and _has_chexpert_csv(p)] if root.is_dir() else []
    )
    return children[0] if len(children) == 1 else None


def read_chexpert_records(root: str | Path, frontal_only: bool = True) -> list[CXRRecord]:
    """Records of a CheXpert folder (module docstring); every referenced image must exist."""
    given = Path(root)
    chexpert_root = find_chexpert_root(given)
    if chexpert_root is None:
        raise DatasetError(
            f"{given}: no CheXpert train.csv or valid.csv (with Path, Frontal/Lateral columns)"
        )
    columns = REQUIRED_COLUMNS + tuple(FINDING_COLUMNS.values())
    records = []
    for csv_name, split in CSV_SPLITS.items():
        csv_path = chexpert_root / csv_name
        if not csv_path.is_file():
            continue
        for line, row in enumerate(read_table(csv_path, columns, f"CheXpert {csv_name}"), start=2):
            if frontal_only and row["Frontal/Lateral"].lower() != "frontal":
                continue
            records.append(_record(chexpert_root, csv_path, line, row, split))
    return records


def _record(chexpert_root: Path, csv_path: Path, line: int, row: dict[str, str], split: str) -> CXRRecord:
    relative = PurePosixPath(row["Path"].replace("\\", "/"))
    path = _resolve(chexpert_root, relative)
    if path is None:
        raise DatasetError(
            f"{csv_path}, line {line}: image {row['Path']!r} not found (looked in {chexpert_root.parent} "
            f"and {chexpert_root})"
        )
    patient = next((part for part in relative.parts if _PATIENT.match(part)), None)
    if patient is None:
        raise DatasetError(f"{csv_path}, line {line}: no patientNNNNN folder in path {row['Path']!r}")
    values = [_chexpert_label(row[column], csv_path, line, column) for column in FINDING_COLUMNS.values()]
    by_finding = dict(zip(FINDING_COLUMNS, values, strict=True))
    labels = tuple(by_finding.get(name) for name in FINDINGS)
    return CXRRecord(
        path=path,
        uid=str(relative),
        patient_id=patient,
        labels=tuple(0.0 if value is None else value for value in labels),
        label_mask=tuple(value is not None for value in labels),
        split=train_or_val(patient) if split == "train" else split,
        age_group=age_group(parse_dicom_age(row["Age"])),
        sex=sex_index(row["Sex"][:1]),
    )


def _resolve(chexpert_root: Path, relative: PurePosixPath) -> Path | None:
    """The image of a CSV path: relative to the root's parent (official), the root, or a renamed root."""
    candidates = [chexpert_root.parent / relative, chexpert_root / relative]
    if len(relative.parts) > 1:
        candidates.append(chexpert_root.joinpath(*relative.parts[1:]))
    return next((path for path in candidates if path.is_file()), None)


def _chexpert_label(value: str, csv_path: Path, line: int, column: str) -> float | None:
    """1.0 / 0.0 known; -1.0 (uncertain) and blank unknown (None); anything else is an error."""
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in (_POSITIVE, _NEGATIVE, _UNCERTAIN):
        raise DatasetError(f"{csv_path}, line {line}: {column} must be 1, 0, -1 or empty, got {value!r}")
    return None if number == _UNCERTAIN else number
