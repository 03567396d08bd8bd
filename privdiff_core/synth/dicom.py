"""Write a synthetic film as a real DICOM file (CR or DX Image Storage, Explicit VR Little Endian).

The header carries what a hospital's archive would: patient identity and demographics (the
protected health information de-identification must remove), the study/series/instance UIDs,
the institution and staff, and the image attributes a reader needs (bit depth, photometric
interpretation, rescale, window). Every value is derived from the seed: the same federation
is written byte for byte identically, whenever and wherever it is generated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from privdiff_core.attributes import SEXES
from privdiff_core.synth.cohort import Study
from privdiff_core.synth.geometry import Array

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
# Fixed identification of the writer; not derived from the installed pydicom version, so the
# bytes do not change when pydicom does.
IMPLEMENTATION_UID = generate_uid(entropy_srcs=["privdiff-synth", "implementation"])
IMPLEMENTATION_VERSION = "PRIVDIFF_SYNTH1"


def study_uids(study: Study, seed: int) -> tuple[str, str, str]:
    """(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID), deterministic from the seed."""
    p = study.patient
    base = ["privdiff-synth", str(seed), p.site.name, p.patient_id, str(study.visit)]
    return tuple(generate_uid(entropy_srcs=[*base, kind]) for kind in ("study", "series", "instance"))


def stored_pixels(image: Array, bits_stored: int, photometric: str) -> np.ndarray:
    """Display values in [0, 1] (bone bright) -> stored integers; MONOCHROME1 is stored inverted."""
    top = (1 << bits_stored) - 1
    values = np.rint(np.clip(image, 0.0, 1.0) * top).astype(np.int64)
    if photometric == "MONOCHROME1":
        values = top - values
    return values.astype(np.uint8 if bits_stored <= 8 else np.uint16)


def _ds(value: float) -> str:
    """A Decimal String short enough for DICOM (16 characters)."""
    return f"{value:.6g}"


def build_dataset(image: Array, study: Study, seed: int) -> Dataset:
    """The complete DICOM data set (with file meta) for one film."""
    patient, site = study.patient, study.patient.site
    study_uid, series_uid, sop_uid = study_uids(study, seed)
    sop_class = DX_IMAGE_STORAGE if site.modality == "DX" else CR_IMAGE_STORAGE
    size = image.shape[0]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    date, time = study.date.strftime("%Y%m%d"), study.time
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = study.accession
    ds.Modality = site.modality
    if site.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = site.manufacturer
    ds.InstitutionName = site.institution
    ds.ReferringPhysicianName = study.referring
    ds.StationName = site.station
    ds.StudyDescription = "XR CHEST 1 VIEW"
    ds.SeriesDescription = f"CHEST {study.followup.view}"
    ds.OperatorsName = study.operator
    ds.ManufacturerModelName = site.model
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = SEXES[patient.sex]
    ds.PatientAge = f"{study.age_years:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = study.followup.view
    spacing = _ds(site.field_mm / size)
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.accession[-8:]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]  # rows run to the patient's left, columns to the feet
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = site.photometric
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 8 if site.bits_stored <= 8 else 16
    ds.BitsStored = site.bits_stored
    ds.HighBit = site.bits_stored - 1
    ds.PixelRepresentation = 0
    stored = stored_pixels(image, site.bits_stored, site.photometric)
    slope, intercept = site.rescale if site.rescale is not None else (1.0, 0.0)
    if site.rescale is not None:
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
    # The film is already processed for display (the site's curve is in the pixels), so the
    # window spans the whole stored range: a reader applying it recovers the film exactly.
    low, high = intercept, intercept + slope * ((1 << site.bits_stored) - 1)
    ds.WindowCenter = _ds((low + high) / 2.0 + 0.5)
    ds.WindowWidth = _ds(high - low + 1.0)
    ds.PixelIntensityRelationship = "LOG"
    # +1: higher stored values mean more X-ray intensity (MONOCHROME1 stores air bright).
    ds.PixelIntensityRelationshipSign = 1 if site.photometric == "MONOCHROME1" else -1
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    return ds


def write_dicom(path: Path, image: Array, study: Study, seed: int) -> str:
    """Write one film; returns its SOP Instance UID."""
    ds = build_dataset(image, study, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)
