"""Synthetic DICOM files with PHI planted in every kind of place a hospital file can hold it.

Imported by the release tests and their conftest (a module name no other test folder uses)."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR

# Every value below is PHI planted in one kind of place; none may survive anywhere in any output
# byte, log line or audit record. Each is distinct so a leak names its source.
PHI_TEXT = {
    "patient_name": "PHIDOE^JOHNATHAN^QUINCY",
    "patient_id": "MRN99887766",
    "issuer": "PHIISSUERHOSP",
    "other_ids": "OTHERID5544",
    "other_ids_seq": "SEQOTHERID321",
    "birth_date": "19530417",
    "birth_time": "081530",
    "age": "071Y",
    "address": "42 PHILANE STREET SPRINGFIELD",
    "phone": "555-0199-PHI",
    "occupation": "PHIOCCUPATION",
    "history": "PHIHISTORY smoker since 1970",
    "patient_comments": "PHIPATIENTCOMMENT",
    "image_comments": "PHIIMAGECOMMENT",
    "study_comments": "PHISTUDYCOMMENT",
    "study_description": "PHISTUDYDESCRIPTION",
    "series_description": "PHISERIESDESCRIPTION",
    "institution": "PHI GENERAL HOSPITAL",
    "institution_address": "1 PHIHOSPITAL WAY",
    "department": "PHIDEPARTMENT",
    "referrer": "PHIREFERRER^ALICE",
    "performer": "PHIPERFORMER^BOB",
    "reader": "PHIREADER^CAROL",
    "operator": "PHIOPERATOR^DAVE",
    "record_physician": "PHIRECORD^EVE",
    "requester": "PHIREQUESTER^FRANK",
    "accession": "ACCPHI123456",
    "study_id": "STUDYPHI42",
    "serial": "SERIALPHI7788",
    "station": "PHISTATION01",
    "study_date": "20190312",
    "study_time": "101112",
    "series_date": "20190313",
    "acquisition_date": "20190314",
    "content_date": "20190315",
    "acquisition_datetime": "20190316121314",
    "creation_date": "20190317",
    "acr_nema_time": "10:11:12",
    "requested_procedure_id": "REQPHI555",
    "scheduled_step_id": "SPSPHI666",
    "requested_description": "PHIREQDESC",
    "nested_institution": "NESTEDINSTITUTIONPHI",
    "deep_person": "DEEPNESTED^PHIPERSON",
    "deep_date": "20170505",
    "private_name": "PRIVATEPHI^NAME",
    "private_nested": "PRIVATENESTEDPHI",
    "overlay_text": "PHIOVERLAYTEXT",
    "unknown_tag_date": "20160606",
    "meta_ae_title": "PHIAETITLE",
    "meta_impl_version": "PHIIMPLVER",
    "preamble": "PHIPREAMBLE",
    "pixel_marker": "PIXELPHI",
}


@dataclass(frozen=True)
class StudyUIDs:
    study: str
    series: str
    sop: str
    frame_of_reference: str
    referenced_study: str


def study_uids(tag: int) -> StudyUIDs:
    root = f"1.2.826.0.1.3680043.8.498.{tag}"
    return StudyUIDs(f"{root}.1", f"{root}.2", f"{root}.3", f"{root}.4", f"{root}.5")


def _pixels(rows: int, cols: int, seed: int) -> np.ndarray:
    """A chest-like 16-bit picture; its first pixels spell PIXELPHI (burnt-in text stand-in)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    lungs = np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) / 0.03) + np.exp(
        -((x - 0.7) ** 2 + (y - 0.5) ** 2) / 0.03
    )
    image = (3000 - 1800 * lungs + 100 * rng.standard_normal((rows, cols))).clip(0, 4095).astype(np.uint16)
    marker = np.frombuffer(PHI_TEXT["pixel_marker"].encode(), dtype="<u2")
    image.flat[: marker.size] = marker
    return image


def phi_dataset(
    uids: StudyUIDs,
    *,
    series: str | None = None,
    sop: str | None = None,
    source_sop: str | None = None,
    modality: str = "CR",
    sop_class: str = CR_IMAGE_STORAGE,
    photometric: str = "MONOCHROME1",
    rows: int = 64,
    cols: int = 48,
    seed: int = 0,
) -> Dataset:
    """A chest radiograph with PHI planted in every kind of place a hospital file can hold it."""
    p = PHI_TEXT
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or uids.sop
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = series or uids.series
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # patient
    ds.PatientName = p["patient_name"]
    ds.PatientID = p["patient_id"]
    ds.IssuerOfPatientID = p["issuer"]
    ds.OtherPatientIDs = p["other_ids"]
    other = Dataset()
    other.PatientID = p["other_ids_seq"]
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = p["birth_date"]
    ds.PatientBirthTime = p["birth_time"]
    ds.PatientAge = p["age"]
    ds.PatientSex = "F"
    ds.PatientWeight = "81.5"
    ds.PatientSize = "1.72"
    ds.PatientAddress = p["address"]
    ds.PatientTelephoneNumbers = p["phone"]
    ds.Occupation = p["occupation"]
    ds.AdditionalPatientHistory = p["history"]
    ds.PatientComments = p["patient_comments"]
    # study, series, equipment, people
    ds.StudyDate, ds.StudyTime = p["study_date"], p["study_time"]
    with warnings.catch_warnings():  # an ACR-NEMA style time is invalid today, and planted on purpose
        warnings.simplefilter("ignore")
        ds.SeriesDate, ds.SeriesTime = p["series_date"], p["acr_nema_time"]
    ds.AcquisitionDate = p["acquisition_date"]
    ds.ContentDate, ds.ContentTime = p["content_date"], "121315"
    ds.AcquisitionDateTime = p["acquisition_datetime"] + ".123456+0100"
    ds.InstanceCreationDate = p["creation_date"]
    ds.AccessionNumber = p["accession"]
    ds.StudyID = p["study_id"]
    ds.StudyDescription = p["study_description"]
    ds.SeriesDescription = p["series_description"]
    ds.ImageComments = p["image_comments"]
    ds.add_new(0x00324000, "LT", p["study_comments"])  # Study Comments (retired)
    ds.InstitutionName = p["institution"]
    ds.InstitutionAddress = p["institution_address"]
    ds.InstitutionalDepartmentName = p["department"]
    ds.ReferringPhysicianName = p["referrer"]
    ds.PerformingPhysicianName = p["performer"]
    ds.NameOfPhysiciansReadingStudy = p["reader"]
    ds.OperatorsName = p["operator"]
    ds.PhysiciansOfRecord = p["record_physician"]
    ds.RequestingPhysician = p["requester"]
    ds.DeviceSerialNumber = p["serial"]
    ds.StationName = p["station"]
    ds.Manufacturer = "ACME RADIOLOGY"
    ds.KVP = "110"
    ds.SeriesNumber = "3"
    ds.InstanceNumber = "7"
    # sequences: referenced study, request attributes, a sequence in a sequence, source image
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = uids.referenced_study
    ds.ReferencedStudySequence = Sequence([ref_study])
    request = Dataset()
    request.RequestedProcedureID = p["requested_procedure_id"]
    request.ScheduledProcedureStepID = p["scheduled_step_id"]
    request.RequestedProcedureDescription = p["requested_description"]
    ds.RequestAttributesSequence = Sequence([request])
    equipment = Dataset()
    equipment.Manufacturer = "ACME"
    equipment.InstitutionName = p["nested_institution"]
    ds.ContributingEquipmentSequence = Sequence([equipment])
    instance = Dataset()
    instance.ReferencedSOPClassUID = sop_class
    instance.ReferencedSOPInstanceUID = source_sop or uids.sop
    instance.PerformingPhysicianName = p["deep_person"]  # PN two levels deep, not a table attribute there
    instance.add_new(0x00080023, "DA", p["deep_date"])
    block = instance.private_block(0x0011, "PHIVENDOR", create=True)
    block.add_new(0x01, "LO", p["private_nested"])
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = series or uids.series
    referenced_series.ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence = Sequence([referenced_series])
    if source_sop is not None:
        source = Dataset()
        source.ReferencedSOPClassUID = sop_class
        source.ReferencedSOPInstanceUID = source_sop
        ds.SourceImageSequence = Sequence([source])
    # private tags, and a date in a public tag no dictionary knows (read back as UN)
    block = ds.private_block(0x0029, "PHIVENDOR", create=True)
    block.add_new(0x10, "LO", p["private_name"])
    block.add_new(0x11, "DA", p["study_date"])
    ds.add_new(0x00781111, "UN", p["unknown_tag_date"].encode())
    # burnt-in flag, overlay, icon: all must go
    ds.BurnedInAnnotation = "YES"
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000022, "LO", p["overlay_text"])
    ds.add_new(0x60003000, "OW", np.packbits(np.ones(rows * cols, np.uint8)).tobytes())
    icon = Dataset()
    icon.Rows = icon.Columns = 4
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = b"ICONPHI!" * 2
    ds.IconImageSequence = Sequence([icon])
    # pixels: 16-bit MONOCHROME1 with a window and a rescale, not square
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = ["0.2", "0.2"]
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.PixelData = _pixels(rows, cols, seed).tobytes()
    return ds


def write_dicom(ds: Dataset, path: Path, *, implicit: bool = False) -> Path:
    """Write with PHI in the file meta and the preamble too."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.999"
    meta.ImplementationVersionName = PHI_TEXT["meta_impl_version"]
    meta.SourceApplicationEntityTitle = PHI_TEXT["meta_ae_title"]
    ds.file_meta = meta
    ds.preamble = PHI_TEXT["preamble"].encode().ljust(128, b"\x00")
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return path


def ct_dataset(uids: StudyUIDs) -> Dataset:
    return phi_dataset(uids, modality="CT", sop_class=CTImageStorage)


def sr_dataset(uids: StudyUIDs) -> Dataset:
    """A structured report (no pixel data) carrying a free-text finding."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SR_STORAGE, uids.sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids.study, uids.series
    ds.Modality = "SR"
    ds.PatientName = PHI_TEXT["patient_name"]
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = PHI_TEXT["history"]
    ds.ContentSequence = Sequence([item])
    return ds


def rgb_dataset(uids: StudyUIDs) -> Dataset:
    ds = phi_dataset(uids, rows=8, cols=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8).tobytes()
    return ds


def multiframe_dataset(uids: StudyUIDs) -> Dataset:
    ds = phi_dataset(uids, rows=8, cols=8)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    return ds


def copy_real(name: str, folder: Path, new_name: str | None = None) -> Path:
    """Copy a real fixture file into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(REAL / name, folder / (new_name or name)))


# A name and a date as a CR's burned-in annotation: 64-pixel letters on a 1024-pixel film (what
# CR readers print), 16 pixels high once the anonymizer's 256-pixel grid resamples them.
BURNED_IN_LINES = ("DOE JOHN", "12/03/2019")


def with_burned_in_text(name: str, folder: Path, *, flagged: bool, new_name: str | None = None) -> Path:
    """A real fixture with `BURNED_IN_LINES` drawn into its stored pixels, top left, in the value
    that displays white (high for MONOCHROME2, low for MONOCHROME1), saved uncompressed.
    `flagged`: the header admits it (Burned In Annotation YES) or says nothing."""
    from PIL import Image, ImageDraw, ImageFont
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(REAL / name)
    stored = ds.pixel_array
    white = 0 if ds.PhotometricInterpretation == "MONOCHROME1" else 2**ds.BitsStored - 1
    picture = Image.fromarray(stored.astype(np.uint8) if ds.BitsStored <= 8 else stored)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=64)
    for line, text in enumerate(BURNED_IN_LINES):
        draw.text((40, 40 + 84 * line), text, fill=white, font=font)
    ds.PixelData = np.asarray(picture).astype(stored.dtype).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if flagged:
        ds.BurnedInAnnotation = "YES"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (new_name or name)
    ds.save_as(path, enforce_file_format=True)
    return path
