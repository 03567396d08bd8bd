"""The NIH ChestX-ray14 layout (Wang et al. 2017), as its download unpacks.

```
ROOT/
  Data_Entry_2017.csv         Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,
                              Patient Gender,View Position,OriginalImage[Width,Height],...
  images/00000001_000.png     or images_001/images/..., images_002/images/... (the 12 archives)
  train_val_list.txt          optional: official split, one image name per line
  test_list.txt               optional
```

"Finding Labels" is `|`-separated with the same 14 names as `attributes.FINDINGS`; "No Finding"
means all 14 negative. Every label is known (mask all True): the NIH labels were mined from
reports for exactly these 14 findings. Patient ids are the CSV's "Patient ID" zero-padded to 8
digits, as in the file names (`00000001_000.png` is patient 00000001). Age is in years (the 2017
file writes "58", older copies "058Y"), sex "M"/"F".

Splits: images in `test_list.txt` are "test"; those in `train_val_list.txt` are "train", except
a stable 10% of their patients set aside as "val" (`splits.train_or_val`; the official lists are
patient-disjoint, so this keeps them so); an image in neither list counts as training data.
Without the lists, patients are split 70/10/20 (`splits.patient_split`).
"""

from __future__ import annotations

import os
from pathlib import Path

from privdiff_core.attributes import FINDINGS, NUM_FINDINGS, age_group, parse_dicom_age, sex_index
from privdiff_core.data.errors import DatasetError
from privdiff_core.data.records import CXRRecord
from privdiff_core.data.splits import patient_split, train_or_val
from privdiff_core.data.tables import read_table

ENTRY_CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender")
NO_FINDING = "No Finding"


def entry_csv(root: Path) -> Path | None:
    """The data-entry CSV of a ChestX-ray14 folder, or None if `root` is not one."""
    return next((root / name for name in ENTRY_CSV_NAMES if (root / name).is_file()), None)


def index_images(root: Path) -> dict[str, Path]:
    """Image file name -> path, over `images/` and the archives' `images_NNN/images/` folders."""
    folders = [root / "images"] + sorted(p / "images" for p in root.glob("images_*") if p.is_dir())
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            with os.scandir(folder) as entries:  # 112k files: scandir is much faster than glob
                found.update((entry.name, Path(entry.path)) for entry in entries if entry.is_file())
    return found


def _read_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def read_chestxray14_records(root: str | Path) -> list[CXRRecord]:
    """Records of a ChestX-ray14 folder (module docstring); every referenced image must exist."""
    root = Path(root)
    csv_path = entry_csv(root)
    if csv_path is None:
        raise DatasetError(f"{root}: no {ENTRY_CSV_NAMES[0]} (the ChestX-ray14 labels file)")
    rows = read_table(csv_path, REQUIRED_COLUMNS, "ChestX-ray14 labels file")
    images = index_images(root)
    test_list = _read_list(root / "test_list.txt")
    train_val_list = _read_list(root / "train_val_list.txt")
    records = []
    for line, row in enumerate(rows, start=2):
        name = row["Image Index"]
        if name not in images:
            raise DatasetError(
                f"{csv_path}, line {line}: image {name!r} not found under {root / 'images'} "
                "or images_*/images/"
            )
        patient_id = _patient_id(row["Patient ID"])
        records.append(
            CXRRecord(
                path=images[name],
                uid=name,
                patient_id=patient_id,
                labels=finding_labels(row["Finding Labels"], csv_path, line),
                label_mask=(True,) * NUM_FINDINGS,
                split=_split(name, patient_id, test_list, train_val_list),
                age_group=age_group(parse_dicom_age(row["Patient Age"])),
                sex=sex_index(row["Patient Gender"]),
            )
        )
    return records


def _patient_id(value: str) -> str:
    return value.zfill(8) if value.isdigit() else value


def finding_labels(findings: str, csv_path: Path, line: int) -> tuple[float, ...]:
    names = {name.strip() for name in findings.split("|") if name.strip()}
    unknown = names - set(FINDINGS) - {NO_FINDING}
    if unknown:
        raise DatasetError(
            f"{csv_path}, line {line}: unknown finding(s) {', '.join(sorted(unknown))} "
            f"(ChestX-ray14 names: {', '.join(FINDINGS)}, {NO_FINDING})"
        )
    return tuple(float(name in names) for name in FINDINGS)


def _split(name: str, patient_id: str, test_list: set[str] | None, train_val_list: set[str] | None) -> str:
    if test_list is None and train_val_list is None:
        return patient_split(patient_id)
    if test_list is not None and name in test_list:
        return "test"
    # In train_val_list, or (a partial list) in neither: training data, split per patient.
    return train_or_val(patient_id)
