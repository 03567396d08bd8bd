"""No single input can abort or fool the reading side of a release: odd names, links, special
files, look-alike SOP classes and body parts, header-flagged burned-in text, and files built to
exhaust memory (checked in a process with an address-space cap). No model needed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from phi_dicom import REAL, phi_dataset, study_uids, write_dicom
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from test_intake import reason_of

from privdiff.client.deid import Deidentifier, UIDMapper
from privdiff.client.intake import (
    REASONS,
    InputFile,
    Intake,
    Prepared,
    walk_inputs,
)

SECRET = b"bad inputs test secret 012345678"
ROOT = Path(__file__).resolve().parents[2]
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _benchmark():
    spec = importlib.util.spec_from_file_location("release_memory", ROOT / "benchmarks" / "release_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def radiograph(number: int, **kwargs) -> Dataset:
    """A PHI-laden chest CR whose header does not flag burned-in text."""
    ds = phi_dataset(study_uids(number), **kwargs)
    ds.BurnedInAnnotation = "NO"
    return ds


def intake(**kwargs) -> Intake:
    return Intake(32, SECRET, Deidentifier(UIDMapper(SECRET)), set(), **kwargs)


# -- names, links, special files ---------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_read_and_named_by_its_bytes(tmp_path):
    name = os.fsdecode(b"PHI_M\xfcller_\xff.dcm")  # Latin-1 bytes, as an old share writes them
    write_dicom(radiograph(1), tmp_path / name)
    (found,) = walk_inputs(tmp_path, SECRET)
    assert found.kind == "file" and len(found.ref) == 16 and found.ref.isalnum()
    result = intake()(found)
    assert isinstance(result, Prepared)


def test_links_are_reported_never_followed(tmp_path):
    source, outside = tmp_path / "in", tmp_path / "outside"
    outside.mkdir()
    secret_file = write_dicom(phi_dataset(study_uids(2)), outside / "elsewhere.dcm")
    source.mkdir()
    (source / "link.dcm").symlink_to(secret_file)
    (source / "linked_folder").symlink_to(outside, target_is_directory=True)
    write_dicom(phi_dataset(study_uids(3)), source / "real.dcm")
    found = {f.path.name: f for f in walk_inputs(source, SECRET)}
    assert {name: f.kind for name, f in found.items()} == {
        "link.dcm": "symlink",
        "linked_folder": "symlink",
        "real.dcm": "file",
    }  # nothing from inside the linked folder
    for name in ("link.dcm", "linked_folder"):
        outcome = intake()(found[name])
        assert (outcome.status, outcome.reason, outcome.input_sha) == ("refused", "symlink", "")
    # A file swapped for a link after the walk is refused too (O_NOFOLLOW), not followed.
    swapped = InputFile(source / "link.dcm", "ref", "file")
    assert (intake()(swapped).status, intake()(swapped).reason) == ("refused", "symlink")


def test_a_fifo_is_reported_and_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.dcm")  # opening it for reading would block forever
    (found,) = walk_inputs(tmp_path, SECRET)
    assert found.kind == "not_a_regular_file"
    assert intake()(found).reason == "not_a_regular_file"
    assert intake()(InputFile(found.path, "ref", "file")).reason == "not_a_regular_file"  # swapped in later


# -- what is a chest radiograph ----------------------------------------------------------------------


def test_a_photograph_marked_chest_is_not_a_secondary_capture():
    photo = phi_dataset(study_uids(1), modality="XC", sop_class=VL_PHOTOGRAPHIC)
    assert reason_of(photo) == ("refused", "not_a_radiograph")
    photo_ot = phi_dataset(study_uids(1), modality="OT", sop_class=VL_PHOTOGRAPHIC)
    assert reason_of(photo_ot) == ("refused", "not_a_radiograph")  # the old prefix match let it in
    photo_cr = phi_dataset(study_uids(1), modality="CR", sop_class=VL_PHOTOGRAPHIC)
    assert reason_of(photo_cr) == ("refused", "unsupported_sop_class")
    sc = phi_dataset(study_uids(1), modality="OT", sop_class=SECONDARY_CAPTURE)
    assert reason_of(sc) is None


def test_body_part_must_be_exactly_a_chest_term_or_code():
    thoracic_spine = phi_dataset(study_uids(1))
    thoracic_spine.BodyPartExamined = "BRUSTWIRBELSAEULE"  # contains BRUST; is the thoracic spine
    assert reason_of(thoracic_spine) == ("refused", "not_chest")
    chest_wall = phi_dataset(study_uids(1))
    chest_wall.BodyPartExamined = "CHESTWALL"
    assert reason_of(chest_wall) == ("refused", "not_chest")

    def region(code: str, scheme: str = "SCT") -> Sequence:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, scheme, "x"
        return Sequence([item])

    spine = phi_dataset(study_uids(1))
    spine.AnatomicRegionSequence = region("122495006")  # SNOMED CT thoracic spine
    assert reason_of(spine) == ("refused", "not_chest")
    coded_sc = phi_dataset(study_uids(1), modality="OT", sop_class=SECONDARY_CAPTURE)
    del coded_sc.BodyPartExamined
    coded_sc.AnatomicRegionSequence = region("816094009")  # SNOMED CT thorax
    assert reason_of(coded_sc) is None
    lower_case = phi_dataset(study_uids(1))
    lower_case.BodyPartExamined = " chest "
    assert reason_of(lower_case) is None


def test_burned_in_text_in_the_header_is_refused_unless_the_site_opts_in(tmp_path):
    path = write_dicom(phi_dataset(study_uids(1)), tmp_path / "flagged.dcm")  # BurnedInAnnotation YES
    refused = intake()(InputFile(path, "ref"))
    assert (refused.status, refused.reason) == ("refused", "burned_in_annotation")
    assert "--clean-burned-in" in REASONS["burned_in_annotation"]
    prepared = intake(clean_burned_in=True)(InputFile(path, "ref"))
    assert isinstance(prepared, Prepared) and prepared.burned_in_flagged
    features = phi_dataset(study_uids(1))
    del features.BurnedInAnnotation
    features.RecognizableVisualFeatures = "YES"
    path = write_dicom(features, tmp_path / "face.dcm")
    assert intake()(InputFile(path, "ref")).reason == "burned_in_annotation"


# -- bounded resources --------------------------------------------------------------------------------


def test_an_image_larger_than_the_pixel_budget_is_refused_before_decoding(tmp_path):
    ds = phi_dataset(study_uids(1), rows=64, cols=64)
    ds.Rows = ds.Columns = 40000  # a header that lies: 3 GiB of pixels
    path = write_dicom(ds, tmp_path / "huge.dcm")
    outcome = intake()(InputFile(path, "ref"))
    assert (outcome.status, outcome.reason) == ("refused", "too_large")
    small = write_dicom(radiograph(2, rows=64, cols=64), tmp_path / "small.dcm")
    assert intake(pixel_budget=4096)(InputFile(small, "ref")).reason == "too_large"  # 8 KiB > 4 KiB
    assert isinstance(intake(pixel_budget=8192)(InputFile(small, "ref")), Prepared)


def test_a_jpeg_stream_larger_than_its_header_is_not_decoded(tmp_path):
    ds = dcmread(REAL / "rsna_cr_jpeg_baseline.dcm")
    ds.Rows = ds.Columns = 512  # the JPEG stream says 1024 x 1024: the decoder would allocate that
    path = tmp_path / "liar.dcm"
    ds.save_as(path, enforce_file_format=True)
    outcome = intake()(InputFile(path, "ref"))
    assert (outcome.status, outcome.reason) == ("failed", "pixel_decode_error")


@pytest.mark.slow
def test_a_deflate_bomb_is_refused_under_a_memory_cap(tmp_path):
    bench = _benchmark()
    bomb = bench.make_deflate_bomb(tmp_path / "bomb.dcm", 768 * 2**20)
    assert bomb.stat().st_size < 2 * 2**20
    # 256 MiB above the imports: inflating 768 MiB at once would raise MemoryError (internal_error).
    result = bench.run_probe(bomb, budget_mib=8, cap_mib=256)
    assert (result["status"], result["reason"]) == ("refused", "too_large"), result


@pytest.mark.slow
def test_a_junk_file_larger_than_memory_allows_is_hashed_streaming_and_refused(tmp_path):
    bench = _benchmark()
    junk = bench.make_junk(tmp_path / "junk.dcm", 384 * 2**20)
    # Reading it whole (then copying it for its hash) needs >= 384 MiB; the cap allows 128.
    result = bench.run_probe(junk, budget_mib=8, cap_mib=128)
    assert (result["status"], result["reason"]) == ("refused", "too_large"), result
    real_size = bench.make_large_cr(tmp_path / "cr.dcm", 2048)  # 8 MiB of pixels: within 16 MiB
    released = bench.run_probe(real_size, budget_mib=16, cap_mib=512)
    assert (released["status"], released["reason"]) == ("prepared", "ok"), released


def test_a_folder_that_cannot_be_listed_is_reported_not_skipped(tmp_path, monkeypatch):
    write_dicom(radiograph(1), tmp_path / "ok.dcm")
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # what a folder without read permission does (root ignores chmod)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = {f.path.name: f.kind for f in walk_inputs(tmp_path, SECRET)}
    assert found == {"ok.dcm": "file", "locked": "unreadable"}
    outcome = intake()(InputFile(tmp_path / "locked", "ref", "unreadable"))
    assert (outcome.status, outcome.reason) == ("failed", "unreadable")
