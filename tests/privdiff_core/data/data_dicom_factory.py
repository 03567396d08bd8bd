"""Helpers for the data tests: small DICOM files and Contract 1 site folders written on the spot."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from privdiff_core.attributes import FINDINGS

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def make_dataset(
    stored: np.ndarray,
    *,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    patient_id: str = "P0001",
    age: str = "045Y",
    sex: str = "F",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    modality: str = "CR",
) -> Dataset:
    """A minimal but complete single-frame image (CR unless told), uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = {"CR": CR_IMAGE_STORAGE, "CT": CTImageStorage}.get(modality, SecondaryCaptureImageStorage)
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = f"Test^{patient_id}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ages like "062" are invalid AS, as in real files
        ds.PatientAge = age
    ds.PatientSex = sex
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.set_pixel_data(stored, photometric, bits_stored)  # also sets SOPInstanceUID, Rows, Bits...
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept if intercept is not None else 0.0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    return ds


def write_dicom(path: Path, ds: Dataset, compress: str | None = None) -> Path:
    if compress is not None:
        ds.compress(compress, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_site(site_dir: Path, images: list[tuple[Dataset, str, dict[str, str]]], compress=None) -> Path:
    """A Contract 1 site folder: images/<PatientID>/<SOPInstanceUID>.dcm + labels.csv.

    `images` holds (dataset, split, {finding: "1"/"0"/""}) triples; findings not named are empty.
    """
    rows = []
    for ds, split, labels in images:
        relative = f"images/{ds.PatientID}/{ds.SOPInstanceUID}.dcm"
        write_dicom(site_dir / relative, ds, compress=compress)
        rows.append([ds.SOPInstanceUID, relative, split] + [labels.get(name, "") for name in FINDINGS])
    with (site_dir / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sop_instance_uid", "file", "split", *FINDINGS])
        writer.writerows(rows)
    return site_dir


def gradient(rows: int = 40, columns: int = 48, high: int = 255, dtype=np.uint8) -> np.ndarray:
    """A deterministic test pattern spanning 0..high (horizontal ramp plus a bright square)."""
    ramp = np.linspace(0, high, columns)[None, :].repeat(rows, axis=0)
    ramp[rows // 4 : rows // 2, columns // 4 : columns // 2] = high
    return np.round(ramp).astype(dtype)
