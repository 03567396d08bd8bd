"""Allow-list de-identification: a unique marker planted in every text-bearing attribute of
pydicom's data dictionary (top level and three sequences deep, public and private, and one item in
every sequence the dictionary knows) comes out nowhere in the released bytes; the leaks an audit
found (alternative calendars, retired order numbers, a nested Code Meaning) are each a test."""

from __future__ import annotations

import re
from io import BytesIO

import numpy as np
import pydicom
import pytest
from phi_dicom import phi_dataset, study_uids
from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from privdiff.client.deid import (
    Deidentifier,
    PixelProvenance,
    UIDMapper,
    encode_file,
    replace_pixels,
    stamp_release,
)
from privdiff.client.deid.retained import RETAINED, standard_code_meanings
from privdiff.client.deid.stamp import to_stored_values
from privdiff.client.deid.table import basic_profile

# Planted values break VR rules on purpose (a marker in a DS, a UI): pydicom warns about each.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SECRET = b"site secret for the allow-list!!"
# Every VR whose value is characters (a DS or a DA can be made to hold a name just as well).
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
MARKER = re.compile(rb"Q\d{6}Z")
CHEST_CODE = ("816094009", "SCT")


class Planter:
    """Unique 8-character markers, each remembering where it was planted."""

    def __init__(self):
        self.where: dict[bytes, str] = {}

    def __call__(self, place: str) -> bytes:
        marker = f"Q{len(self.where):06d}Z".encode()
        self.where[marker] = place
        return marker

    def plant_all_text(self, ds: Dataset, depth: str) -> None:
        """Every public text attribute of the dictionary, and a private block, as raw file bytes."""
        for tag, entry in DicomDictionary.items():
            if entry[0] in TEXT_VRS and tag >> 16 not in (0x0000, 0x0002, 0x0004):
                value = self(f"{depth}{entry[4] or hex(tag)}")
                ds[tag] = RawDataElement(Tag(tag), entry[0], len(value), value, 0, False, True)
        for element, vr in ((0x10, "LO"), (0x11, "SH"), (0x12, "UT"), (0x13, "PN")):
            block = ds.private_block(0x0029, self(f"{depth}private creator").decode(), create=True)
            block.add_new(element, vr, self(f"{depth}private {vr}").decode())


def _code_item(planter: Planter, depth: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = CHEST_CODE
    item.CodeMeaning = planter(f"{depth}CodeMeaning").decode()
    return item


def planted_dataset() -> tuple[Dataset, Planter]:
    planter = Planter()
    ds = Dataset()
    planter.plant_all_text(ds, "")
    # One item in every sequence of the dictionary, holding the kinds of value that leaked.
    for tag, entry in DicomDictionary.items():
        if entry[0] == "SQ":
            item = _code_item(planter, f"{entry[4]}>")
            item.PatientName = planter(f"{entry[4]}>PatientName").decode()
            item.add_new(0x00100033, "LO", planter(f"{entry[4]}>alternative calendar").decode())
            ds[tag] = pydicom.DataElement(tag, "SQ", Sequence([item]))
    # Three sequences deep along the sequences the profile keeps and walks (D, D, U*), every
    # text attribute at every level; and coded anatomy whose meaning is a name.
    levels = [Dataset(), Dataset(), Dataset()]
    for depth, item in zip(
        ("Content>", "Content>Content>", "Content>Content>SourceImage>"), levels, strict=True
    ):
        planter.plant_all_text(item, depth)
        item.AnatomicRegionSequence = Sequence([_code_item(planter, f"{depth}AnatomicRegion>")])
    levels[1].SourceImageSequence = Sequence([levels[2]])
    levels[0].ContentSequence = Sequence([levels[1]])
    ds.ContentSequence = Sequence([levels[0]])
    ds.AnatomicRegionSequence = Sequence([_code_item(planter, "AnatomicRegion>")])
    return ds, planter


def as_read_from_a_file(ds: Dataset) -> Dataset:
    """Write and read back, so every value is the raw bytes a hospital file would hold."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return pydicom.dcmread(BytesIO(buffer.getvalue()), force=True)


def released(ds: Dataset) -> bytes:
    mapper = UIDMapper(SECRET)
    Deidentifier(mapper)(ds)
    provenance = PixelProvenance("ab" * 32, "0011223344556677", 16, 16, text_check_passed=True)
    replace_pixels(ds, to_stored_values(np.zeros((16, 16), np.float32)), provenance)
    stamp_release(ds, provenance, mapper, "fallback")
    return encode_file(ds)


def test_no_marker_from_any_text_attribute_at_any_depth_survives():
    ds, planter = planted_dataset()
    source = as_read_from_a_file(ds)
    assert len(planter.where) > 4 * 2500
    data = released(source)
    leaks = sorted({planter.where[m] for m in MARKER.findall(data)})
    assert leaks == []
    out = pydicom.dcmread(BytesIO(data))
    # The coded anatomy survives as the standard's code with the standard's meaning.
    region = out.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == CHEST_CODE
    assert region.CodeMeaning == standard_code_meanings()[("SCT", CHEST_CODE[0])]


def _through_the_profile(ds: Dataset) -> Dataset:
    return pydicom.dcmread(BytesIO(released(as_read_from_a_file(ds))))


def test_alternative_calendar_attributes_are_removed():
    ds = phi_dataset(study_uids(1))
    ds.PatientBirthDateInAlternativeCalendar = "5713/07/17 HEBREW DOE"
    ds.PatientDeathDateInAlternativeCalendar = "5783/01/01 DOE"
    ds.PatientAlternativeCalendar = "HEBREW"
    out = _through_the_profile(ds)
    for keyword in (
        "PatientBirthDateInAlternativeCalendar",
        "PatientDeathDateInAlternativeCalendar",
        "PatientAlternativeCalendar",
    ):
        assert keyword not in out, keyword


def test_retired_order_numbers_are_removed():
    ds = phi_dataset(study_uids(1))
    ds.add_new(0x00402006, "SH", "PLACER4471DOE")  # Placer Order Number / Procedure (retired)
    ds.add_new(0x00402007, "SH", "FILLER4472DOE")  # Filler Order Number / Procedure (retired)
    data = released(as_read_from_a_file(ds))
    assert b"PLACER4471DOE" not in data and b"FILLER4472DOE" not in data


def test_a_name_in_a_code_meaning_three_sequences_deep_is_gone():
    ds = phi_dataset(study_uids(1))
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "121071", "DCM"  # "Finding"
    concept.CodeMeaning = "Finding for DOE^JOHNATHAN"
    inner = Dataset()
    inner.ConceptNameCodeSequence = Sequence([concept])
    middle = Dataset()
    middle.ContentSequence = Sequence([inner])
    outer = Dataset()
    outer.ContentSequence = Sequence([middle])
    ds.ContentSequence = Sequence([outer])
    view = Dataset()
    view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "R-10214", "LOCAL", "PA for DOE"
    ds.ViewCodeSequence = Sequence([view])  # a local code: not the standard's, so removed
    data = released(as_read_from_a_file(ds))
    assert b"DOE" not in data
    assert "ViewCodeSequence" not in pydicom.dcmread(BytesIO(data))


def test_kept_attributes_keep_only_values_that_cannot_name_anyone():
    ds = phi_dataset(study_uids(1))
    ds.ViewPosition = "PA DOE"  # not a view position term
    ds.KVP = "110"
    out = _through_the_profile(ds)
    assert "ViewPosition" not in out
    assert out.KVP == 110 and out.Modality == "CR" and out.BodyPartExamined == "CHEST"
    assert "Manufacturer" not in out  # free text: not needed, not kept


def test_every_retained_attribute_is_justified_and_not_one_the_standard_removes():
    table = basic_profile()
    from pydicom.datadict import tag_for_keyword

    for rule in RETAINED:
        tag = tag_for_keyword(rule.keyword)
        assert tag is not None and keyword_for_tag(tag) == rule.keyword
        assert table.action(tag) is None, f"{rule.keyword} is in Table E.1-1: its action applies"
        assert rule.why and rule.check in ("terms", "number", "standard_uid", "orientation", "codes")
        assert (rule.check == "codes") == (dictionary_VR(tag) == "SQ")
        if rule.check == "terms":
            assert rule.terms and dictionary_VR(tag) == "CS"
