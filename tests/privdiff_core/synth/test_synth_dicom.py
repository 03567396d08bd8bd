"""DICOM headers and pixels of the synthetic films, read back with pydicom."""

import csv
import datetime as dt
import re

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from privdiff_core.attributes import parse_dicom_age
from privdiff_core.synth.dicom import CR_IMAGE_STORAGE, DX_IMAGE_STORAGE
from privdiff_core.synth.sites import site_profile

REQUIRED = (
    "PatientID", "PatientName", "PatientSex", "PatientAge", "PatientBirthDate", "StudyDate", "StudyTime",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "InstitutionName",
    "BodyPartExamined", "ViewPosition", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel", "WindowCenter", "WindowWidth",
    "AccessionNumber", "ReferringPhysicianName", "PixelSpacing",
)  # fmt: skip


def headers(out, site):
    with open(out / site / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            yield row, pydicom.dcmread(out / site / row["file"])


def test_headers_are_complete_and_consistent_with_labels(tiny_federation, tiny_params):
    out, summary = tiny_federation
    uids = set()
    for index, site in enumerate(("site_00", "site_01")):
        profile = site_profile(index, tiny_params.seed)
        for row, ds in headers(out, site):
            missing = [k for k in REQUIRED if k not in ds]
            assert not missing, missing
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == row["sop_instance_uid"]
            assert ds.SOPClassUID == {"CR": CR_IMAGE_STORAGE, "DX": DX_IMAGE_STORAGE}[ds.Modality]
            assert ds.Modality == profile.modality and ds.InstitutionName == profile.institution
            assert row["file"].split("/")[1] == ds.PatientID
            assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition in ("PA", "AP")
            assert ds.PatientSex in ("M", "F")
            assert re.fullmatch(r"\d{3}Y", ds.PatientAge)
            born = dt.datetime.strptime(ds.PatientBirthDate, "%Y%m%d").date()
            seen = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
            years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
            assert parse_dicom_age(ds.PatientAge) == years and 18 <= years <= 100
            assert "^" in str(ds.PatientName)  # a realistic-looking FAMILY^GIVEN name to de-identify
            assert ds.Rows == ds.Columns == tiny_params.size
            assert ds.BitsStored == profile.bits_stored and ds.HighBit == ds.BitsStored - 1
            assert ds.BitsAllocated == (8 if ds.BitsStored <= 8 else 16)
            assert ds.PhotometricInterpretation == profile.photometric
            pixels = ds.pixel_array
            assert pixels.shape == (tiny_params.size,) * 2 and int(pixels.max()) < (1 << ds.BitsStored)
            uids |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    assert len(uids) == 3 * summary["images"]  # every study, series and instance UID is unique


def test_a_patients_headers_agree_across_follow_ups(tiny_federation):
    out, _ = tiny_federation
    by_patient = {}
    for row, ds in headers(out, "site_00"):
        facts = (str(ds.PatientName), ds.PatientSex, ds.PatientBirthDate, row["split"])
        by_patient.setdefault(ds.PatientID, set()).add(facts)
    assert all(len(f) == 1 for f in by_patient.values())
    names = {next(iter(f))[0] for f in by_patient.values()}
    assert len(names) > 1


def test_monochrome1_site_stores_inverted_pixels(tiny_federation):
    """site_01 is MONOCHROME1: air is stored bright, so its lungs hold high stored values; inverted,
    its films look like every MONOCHROME2 site's (mediastinum bright, lungs dark)."""
    out, _ = tiny_federation
    for site, photometric in (("site_00", "MONOCHROME2"), ("site_01", "MONOCHROME1")):
        contrast = []
        for _, ds in headers(out, site):
            assert ds.PhotometricInterpretation == photometric
            assert ds.PixelIntensityRelationshipSign == (1 if photometric == "MONOCHROME1" else -1)
            stored = ds.pixel_array.astype(np.float64) / ((1 << ds.BitsStored) - 1)
            n = stored.shape[0]
            middle = stored[n // 3 : 2 * n // 3, n // 2 - 1 : n // 2 + 1].mean()  # spine and heart
            lungs = stored[n // 3 : n // 2, n // 5 : n // 3].mean()  # right mid zone
            contrast.append(middle - lungs)
        if photometric == "MONOCHROME1":
            assert np.median(contrast) < -0.15  # stored lungs brighter than the stored mediastinum
        else:
            assert np.median(contrast) > 0.15


def test_window_and_rescale_recover_the_display_values(tiny_federation, tiny_params):
    """Applying the header's modality LUT and window (as pydicom does) gives the film in [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out, _ = tiny_federation
    for site in ("site_00", "site_01"):
        for _, ds in headers(out, site):
            shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
            top = (1 << ds.BitsStored) - 1
            low, high = float(shown.min()), float(shown.max())
            assert low >= -1e-6 and high <= top + 1e-6
            raw = ds.pixel_array.astype(np.float64)
            assert np.allclose(shown, raw, atol=1.0)  # full-range window: the film is shown as stored
