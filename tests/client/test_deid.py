"""De-identification: the shipped Annex E table, one test per rule kind, UIDs, and a whole file
with PHI planted everywhere that must come out clean to the last byte. No model needed."""

from __future__ import annotations

import re
from io import BytesIO

import numpy as np
import pydicom
import pytest
from phi_dicom import PHI_TEXT, REAL, phi_dataset, study_uids, write_dicom
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from privdiff.client.deid import (
    Deidentifier,
    PixelProvenance,
    UIDMapper,
    basic_profile,
    encode_file,
    replace_pixels,
    stamp_release,
    to_stored_values,
)
from privdiff.client.deid.build_table import parse_database
from privdiff.client.deid.table import ActionTable, TableRow, read_rows

SECRET = b"site secret for the deid tests!!"
UID_PATTERN = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def deidentified(ds: Dataset, secret: bytes = SECRET) -> Dataset:
    Deidentifier(UIDMapper(secret))(ds)
    return ds


def released_bytes(ds: Dataset, secret: bytes = SECRET, size: int = 32) -> bytes:
    """The de-identification + pixel replacement + stamping + encoding a release performs."""
    mapper = UIDMapper(secret)
    Deidentifier(mapper)(ds)
    provenance = PixelProvenance("ab" * 32, "0011223344556677", size, 48)
    replace_pixels(ds, to_stored_values(np.zeros((size, size), np.float32)), provenance)
    stamp_release(ds, provenance, mapper, "fallback")
    return encode_file(ds)


# -- the table --------------------------------------------------------------------------------------


def test_table_is_the_standards_table_e11_basic_profile():
    rows = read_rows()
    assert len(rows) == 655  # PS3.15 2026c Table E.1-1
    assert {r.action for r in rows} <= {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    by_keyword = {r.keyword: r.action for r in rows if r.keyword}
    # Retain Patient Characteristics is NOT applied: age and sex are sensitive here.
    assert by_keyword["PatientAge"] == "X"
    assert by_keyword["PatientSex"] == "Z"
    assert by_keyword["PatientID"] == "Z/D"
    assert by_keyword["StudyInstanceUID"] == "U"
    assert by_keyword["InstitutionName"] == "X/Z/D"
    assert by_keyword["SourceImageSequence"] == "X/Z/U*"
    assert {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"} <= {r.tag for r in rows}


def test_table_names_agree_with_pydicoms_data_dictionary():
    """An independent check of the transcription: PS3.6 names (pydicom) vs the table's names."""

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    named = [r for r in read_rows() if r.keyword]
    agree = [r for r in named if norm(dictionary_description(tag_for_keyword(r.keyword))) == norm(r.name)]
    assert len(named) > 600 and len(agree) == len(named)


def test_table_rejects_actions_outside_the_basic_profile():
    with pytest.raises(ValueError, match="does not use"):
        ActionTable([TableRow("(0010,0010)", "PatientName", "Patient's Name", "C")])


def test_build_table_parses_a_standard_database_module():
    source = (
        "D_TAGS = [\n    (0x0040, 0xA123),  # Person Name\n]\n"
        "X_TAGS = [\n    (0x6000, 0x3000, 0xFF00, 0xFFFF),  # Overlay Data\n"
        "    (\n        0x0088,\n        0x0200,\n    ),  # Icon Image Sequence(see Note 11)\n]\n"
        "X_Z_U_STAR_TAGS = [(0x0008, 0x1140)]  # Referenced Image Sequence\n"
    )
    rows = parse_database(source)
    assert rows == [
        {
            "tag": "(0008,1140)",
            "keyword": "ReferencedImageSequence",
            "name": "Referenced Image Sequence",
            "action": "X/Z/U*",
        },
        {"tag": "(0040,A123)", "keyword": "PersonName", "name": "Person Name", "action": "D"},
        {"tag": "(0088,0200)", "keyword": "IconImageSequence", "name": "Icon Image Sequence", "action": "X"},
        {"tag": "(60xx,3000)", "keyword": "", "name": "Overlay Data", "action": "X"},
    ]


# -- one test per rule kind -------------------------------------------------------------------------


def test_rule_x_removes():
    ds = deidentified(phi_dataset(study_uids(1)))
    for keyword in (
        "PatientAge",
        "ImageComments",
        "OtherPatientIDsSequence",
        "PatientAddress",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientComments",
        "RequestAttributesSequence",
        "IconImageSequence",
        "InstitutionAddress",
        "PatientWeight",
        "PatientSize",
        "StudyDescription",
        "IssuerOfPatientID",
    ):
        assert keyword not in ds, keyword
    assert 0x00324000 not in ds  # Study Comments


def test_rule_z_empties_and_keeps_type2_attributes_present():
    ds = deidentified(phi_dataset(study_uids(1)))
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
    ):
        assert keyword in ds and not ds[keyword].value, keyword


def test_rule_d_replaces_with_a_dummy_of_the_right_vr():
    ds = phi_dataset(study_uids(1))
    ds.PersonName = "SOMEONE^PHI"  # (0040,A123) Person Name: D
    ds.VerificationDateTime = "20200101101010"  # (0040,A030): D
    content = Dataset()
    content.PersonName = "NESTED^PHI"
    ds.ContentSequence = Sequence([content])  # D on a sequence: kept, its items de-identified
    deidentified(ds)
    assert ds.PersonName == "ANONYMIZED"
    assert ds.VerificationDateTime == "19000101000000"
    assert ds.ContentSequence[0].PersonName == "ANONYMIZED"


def test_rule_u_remaps_uids_to_2_25():
    uids = study_uids(1)
    ds = deidentified(phi_dataset(uids))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        value = str(ds[keyword].value)
        assert UID_PATTERN.match(value) and len(value) <= 64, keyword
    assert ds.StudyInstanceUID == UIDMapper(SECRET)(uids.study)


def test_compound_rules_resolve_to_removal_or_emptying():
    ds = deidentified(phi_dataset(study_uids(1)))
    assert ds.PatientID == ""  # Z/D -> Z
    for keyword in ("AcquisitionDate", "ReferencedStudySequence"):  # X/Z -> X
        assert keyword not in ds
    for keyword in ("SeriesDate", "SeriesTime", "InstanceCreationDate"):  # X/D -> X
        assert keyword not in ds
    for keyword in (
        "InstitutionName",
        "OperatorsName",
        "StationName",
        "DeviceSerialNumber",
        "AcquisitionDateTime",
    ):
        assert keyword not in ds  # X/Z/D -> X


def test_rule_u_star_keeps_source_references_consistent():
    uids = study_uids(1)
    source_sop = study_uids(2).sop
    ds = deidentified(phi_dataset(uids, source_sop=source_sop))
    (item,) = ds.SourceImageSequence
    assert item.ReferencedSOPInstanceUID == UIDMapper(SECRET)(source_sop)
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.1"  # a class UID is not an instance UID


def test_allow_list_keeps_only_what_a_radiograph_needs():
    ds = deidentified(phi_dataset(study_uids(1)))
    assert ds.Modality == "CR"
    assert ds.BodyPartExamined == "CHEST"
    assert ds.ViewPosition == "PA"
    assert ds.KVP == 110
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
    # Not in Table E.1-1 and not on the retained list: removed, harmless or not.
    assert "Manufacturer" not in ds and "SpecificCharacterSet" not in ds


def test_private_tags_are_removed_at_every_depth():
    ds = deidentified(phi_dataset(study_uids(1)))

    def private_tags(dataset: Dataset) -> list:
        found = []
        for element in dataset:
            if element.tag.is_private:
                found.append(element.tag)
            if element.VR == "SQ":
                for item in element.value:
                    found += private_tags(item)
        return found

    assert private_tags(ds) == []


def test_overlays_and_curves_are_removed_whole():
    ds = phi_dataset(study_uids(1))
    ds.add_new(0x50000005, "US", 2)  # Curve Dimensions
    deidentified(ds)
    assert not [e.tag for e in ds if e.tag.group & 0xFF00 in (0x5000, 0x6000)]


def test_what_no_rule_names_is_removed_at_every_depth():
    """Names, dates, free text, unknown tags and sequences neither the table nor the retained list
    names are removed; nested instance UIDs of kept sequences are remapped; class UIDs kept."""
    uids = study_uids(1)
    source_sop = study_uids(2).sop
    ds = deidentified(phi_dataset(uids, source_sop=source_sop))
    assert "ReferencedSeriesSequence" not in ds  # in no table: gone with all it held
    assert 0x00781111 not in ds  # a public tag no dictionary knows
    assert "ContributingEquipmentSequence" not in ds
    (item,) = ds.SourceImageSequence  # U*: kept, items walked
    assert set(item.dir()) == {"ReferencedSOPClassUID", "ReferencedSOPInstanceUID"}


# -- UIDs -------------------------------------------------------------------------------------------


def test_uid_mapping_is_keyed_and_repeatable():
    uid = "1.2.826.0.1.3680043.8.498.7"
    assert UIDMapper(SECRET)(uid) == UIDMapper(SECRET)(uid)
    assert UIDMapper(SECRET)(uid) != UIDMapper(b"another site's secret, 32 bytes!")(uid)
    assert UIDMapper(SECRET)(uid) != UIDMapper(SECRET)(uid + "1")
    assert UIDMapper(SECRET)(uid + "\x00") == UIDMapper(SECRET)(uid)  # padding is not part of a UID


def test_one_study_stays_one_study_and_series_stay_apart():
    uids = study_uids(1)
    first = deidentified(phi_dataset(uids))
    second = deidentified(phi_dataset(uids, series=uids.series + ".9", sop=uids.sop + ".9"))
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.SeriesInstanceUID != second.SeriesInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    other_site = deidentified(phi_dataset(uids), secret=b"another site's secret, 32 bytes!")
    assert other_site.StudyInstanceUID != first.StudyInstanceUID


# -- a whole released object ------------------------------------------------------------------------


def _all_original_uids(uids) -> list[str]:
    return [
        uids.study,
        uids.series,
        uids.sop,
        uids.frame_of_reference,
        uids.referenced_study,
        "1.2.826.0.1.3680043.8.498.999",
    ]


@pytest.mark.parametrize("implicit", [False, True])
def test_no_planted_phi_or_original_uid_survives_in_any_byte(tmp_path, implicit):
    uids = study_uids(1)
    path = write_dicom(
        phi_dataset(uids, source_sop=study_uids(2).sop), tmp_path / "in.dcm", implicit=implicit
    )
    raw_in = path.read_bytes()
    assert all(v.encode() in raw_in for v in PHI_TEXT.values() if v != PHI_TEXT["age"])  # planted indeed
    data = released_bytes(pydicom.dcmread(path))
    for name, value in PHI_TEXT.items():
        assert value.encode() not in data, name
        assert value.replace("^", " ").encode() not in data, name
    for uid in [*_all_original_uids(uids), study_uids(2).sop]:
        assert uid.encode() not in data, uid
    out = pydicom.dcmread(BytesIO(data))
    assert out.preamble == b"\x00" * 128
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert "PatientAge" not in out and out.PatientSex == ""


def test_released_header_records_what_was_done():
    out = pydicom.dcmread(BytesIO(released_bytes(phi_dataset(study_uids(1)))))
    assert out.PatientIdentityRemoved == "YES"
    codes = {(item.CodingSchemeDesignator, item.CodeValue) for item in out.DeidentificationMethodCodeSequence}
    # Pixels whose text check did not run: Basic Profile only, no claim about burned-in text.
    assert codes == {("DCM", "113100")}
    assert "BurnedInAnnotation" not in out
    assert out.DeidentificationMethod
    assert list(out.ImageType) == ["DERIVED", "SECONDARY"]
    assert out.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert "PrivDiff-Net" in out.DerivationDescription and "ab" * 32 in out.DerivationDescription
    assert out.DerivationCodeSequence[0].CodeValue == "113085"
    assert out.ContributingEquipmentSequence[-1].PurposeOfReferenceCodeSequence[0].CodeValue == "109104"
    assert "0011223344556677" in out.ContributingEquipmentSequence[-1].ContributionDescription
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_clean_pixel_data_is_claimed_only_after_the_text_check_passed():
    mapper = UIDMapper(SECRET)
    ds = deidentified(phi_dataset(study_uids(1)))
    provenance = PixelProvenance("ab" * 32, None, 32, 48, text_check_passed=True)
    replace_pixels(ds, to_stored_values(np.zeros((32, 32), np.float32)), provenance)
    stamp_release(ds, provenance, mapper, "fallback")
    out = pydicom.dcmread(BytesIO(encode_file(ds)))
    codes = {(item.CodingSchemeDesignator, item.CodeValue) for item in out.DeidentificationMethodCodeSequence}
    assert codes == {("DCM", "113100"), ("DCM", "113101")}
    assert out.BurnedInAnnotation == "NO"


def test_pixel_module_is_rebuilt_for_the_new_pixels():
    out = pydicom.dcmread(BytesIO(released_bytes(phi_dataset(study_uids(1), rows=64, cols=48))))
    assert (out.Rows, out.Columns) == (32, 32)
    assert (out.BitsAllocated, out.BitsStored, out.HighBit, out.PixelRepresentation) == (16, 12, 11, 0)
    assert out.PhotometricInterpretation == "MONOCHROME2"
    assert out.pixel_array.shape == (32, 32) and int(out.pixel_array.max()) == 2048
    for keyword in (
        "RescaleSlope",
        "RescaleIntercept",
        "VOILUTSequence",
        "ModalityLUTSequence",
        "IconImageSequence",
    ):
        assert keyword not in out
    assert (float(out.WindowCenter), float(out.WindowWidth)) == (2048.0, 4096.0)
    # the 48-pixel centred square became 32 pixels: spacing 0.2 mm * 48 / 32
    assert [float(v) for v in out.PixelSpacing] == pytest.approx([0.3, 0.3])


def test_real_ct_fixture_header_is_cleaned():
    """The presidio CT carries pseudo-PHI in standard and private tags: the profile removes it."""
    data = released_bytes(pydicom.dcmread(REAL / "ct_not_a_radiograph.dcm"))
    for value in (
        b"KAUFMAN",
        b"BAILEY",
        b"SMITH^MARY",
        b"6774825273",
        b"19430722",
        b"Lawyer",
        b"Francis, Todd",
        b"PSC 7523",
        b"209-319-8430",
        b"20130911",
        b"20130912E801911",
        b"Scott Kaufman",
        b"87009668",
        b"TOSHIBA_MEC_CT3",
        b"POSDA",
        b"2.25.256250229994997084691645664008024473078",
    ):
        assert value not in data, value


def test_basic_profile_is_loaded_once():
    assert basic_profile() is basic_profile()
    assert basic_profile().action(0x60023000) == "X"  # repeating group (60xx,3000)
    assert basic_profile().action(0x00100010) == "Z"
