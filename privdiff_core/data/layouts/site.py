"""The site layout (Contract 1 in docs/architecture.md) and a federation folder of sites.

A site folder holds `labels.csv` (`sop_instance_uid,file,split,` + the 14 findings; a finding
is 1, 0 or empty = unknown) and the DICOM files it names. Identity, age and sex are not in the
CSV: they are read from each file's header (PatientID; PatientAge via
`attributes.parse_dicom_age` and `age_group`; PatientSex via `attributes.sex_index`), as they
would be at a hospital. A federation folder holds several site folders (`site_00/`, ...); pooled,
each patient id is prefixed with its site's folder name (`site_00/P0001`), because two hospitals
may use the same local id for different people.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from privdiff_core.attributes import FINDINGS, age_group, parse_dicom_age, sex_index
from privdiff_core.data.dicom import read_dicom_dataset
from privdiff_core.data.errors import DatasetError
from privdiff_core.data.records import SPLITS, CXRRecord
from privdiff_core.data.tables import binary_label, read_table

LABELS_CSV = "labels.csv"
SITE_COLUMNS: tuple[str, ...] = ("sop_instance_uid", "file", "split", *FINDINGS)
_HEADER_KEYS = ("SOPInstanceUID", "PatientID", "PatientAge", "PatientSex")


def is_site_folder(root: Path) -> bool:
    return (root / LABELS_CSV).is_file()


def site_folders(root: Path) -> list[Path]:
    """Sub-folders of a federation folder that are site folders, in name order."""
    return sorted(p for p in root.iterdir() if p.is_dir() and is_site_folder(p)) if root.is_dir() else []


def read_site_records(
    site_dir: str | Path, site: str | None = None, progress: bool = False
) -> list[CXRRecord]:
    """Records of one site folder; `site` (a name) prefixes patient ids and fills `record.site`.

    Reads every file's header (~1-2 ms each), hence the optional progress bar.
    """
    site_dir = Path(site_dir)
    csv_path = site_dir / LABELS_CSV
    rows = read_table(csv_path, SITE_COLUMNS, "site labels file (labels.csv)")
    records = []
    bar = tqdm(
        rows, desc=f"reading headers of {site_dir.name}", disable=not progress, leave=False, unit="file"
    )
    for line, row in enumerate(bar, start=2):
        records.append(_site_record(site_dir, csv_path, line, row, site))
    return records


def _site_record(
    site_dir: Path, csv_path: Path, line: int, row: dict[str, str], site: str | None
) -> CXRRecord:
    if row["split"] not in SPLITS:
        raise DatasetError(
            f"{csv_path}, line {line}: split must be one of {', '.join(SPLITS)}, got {row['split']!r}"
        )
    path = site_dir / row["file"]
    if not row["file"] or not path.is_file():
        raise DatasetError(f"{csv_path}, line {line}: image {row['file']!r} does not exist in {site_dir}")
    header = _header_values(read_dicom_dataset(path, header_only=True))
    uid = header["SOPInstanceUID"]
    if uid != row["sop_instance_uid"]:
        raise DatasetError(
            f"{csv_path}, line {line}: sop_instance_uid {row['sop_instance_uid']!r} does not match the "
            f"file's SOP Instance UID {uid!r} ({path})"
        )
    patient_id = header["PatientID"]
    if not patient_id:
        raise DatasetError(f"{path}: no PatientID in the DICOM header; the site layout needs one per image")
    values = [binary_label(row[name], csv_path, line, name) for name in FINDINGS]
    return CXRRecord(
        path=path,
        uid=uid,
        patient_id=f"{site}/{patient_id}" if site else patient_id,
        labels=tuple(0.0 if v is None else v for v in values),
        label_mask=tuple(v is not None for v in values),
        split=row["split"],
        age_group=age_group(parse_dicom_age(header["PatientAge"])),
        sex=sex_index(header["PatientSex"]),
        site=site,
    )


def _header_values(header: Dataset) -> dict[str, str]:
    """The identity attributes as stripped strings ('' when absent)."""
    with warnings.catch_warnings():
        # pydicom warns on values outside their VR's format, e.g. PatientAge "62" (no unit) as real
        # files write it; parse_dicom_age reads those, so the warning would only be noise.
        warnings.simplefilter("ignore", UserWarning)
        return {key: str(header.get(key, "") or "").strip() for key in _HEADER_KEYS}


def read_federation_records(root: str | Path, progress: bool = False) -> list[CXRRecord]:
    """Records of every site folder under `root`, pooled, patient ids prefixed with the site name."""
    root = Path(root)
    sites = site_folders(root)
    if not sites:
        raise DatasetError(
            f"{root}: no site folders (sub-folders with a {LABELS_CSV}) in this federation folder"
        )
    return [
        record
        for site_dir in sites
        for record in read_site_records(site_dir, site=site_dir.name, progress=progress)
    ]
