"""On-disk layouts privdiff reads: a site folder, a federation of sites, ChestX-ray14, CheXpert.

Each layout module turns its folder into a list of `CXRRecord`s; `detect_layout` says which
layout a folder is, so `open_dataset` needs only the path.
"""

from __future__ import annotations

from pathlib import Path

from privdiff_core.data.errors import DatasetError
from privdiff_core.data.layouts.chestxray14 import ENTRY_CSV_NAMES, entry_csv, read_chestxray14_records
from privdiff_core.data.layouts.chexpert import find_chexpert_root, read_chexpert_records
from privdiff_core.data.layouts.site import (
    LABELS_CSV,
    is_site_folder,
    read_federation_records,
    read_site_records,
    site_folders,
)
from privdiff_core.data.records import CXRRecord

ENTRY_CSV = ENTRY_CSV_NAMES[0]
LAYOUTS: tuple[str, ...] = ("site", "federation", "chestxray14", "chexpert")

_EXPECTED = (
    f"a site folder ({LABELS_CSV} + images/), a federation folder (site_*/{LABELS_CSV}), "
    "ChestX-ray14 (Data_Entry_2017.csv + images/) or CheXpert (train.csv / valid.csv)"
)


def detect_layout(root: str | Path) -> str:
    """Which of `LAYOUTS` the folder `root` is; `DatasetError` saying what was expected if none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}" if not root.exists() else f"not a folder: {root}")
    if is_site_folder(root):
        return "site"
    if site_folders(root):
        return "federation"
    if entry_csv(root) is not None:
        return "chestxray14"
    if find_chexpert_root(root) is not None:
        return "chexpert"
    if (root / "images").is_dir() and any((root / "images").rglob("*.dcm")):
        raise DatasetError(f"{root}: a site folder with DICOM images/ but no {LABELS_CSV} (its labels file)")
    if any(root.glob("images*/**/*.png")):
        raise DatasetError(f"{root}: PNG images/ like ChestX-ray14, but no {ENTRY_CSV} (its labels file)")
    if (root / "federation.json").is_file():
        raise DatasetError(f"{root}: a federation folder whose site folders have no {LABELS_CSV}")
    raise DatasetError(f"{root}: unknown data layout; expected {_EXPECTED}")


def read_records(
    root: str | Path, layout: str | None = None, frontal_only: bool = True, progress: bool = False
) -> list[CXRRecord]:
    """Records of a data folder in the given (or detected) layout (`progress`: DICOM header scans)."""
    layout = layout or detect_layout(root)
    if layout == "site":
        return read_site_records(root, progress=progress)
    if layout == "federation":
        return read_federation_records(root, progress=progress)
    if layout == "chestxray14":
        return read_chestxray14_records(root)
    if layout == "chexpert":
        return read_chexpert_records(root, frontal_only=frontal_only)
    raise DatasetError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
