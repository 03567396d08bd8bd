"""What may be released (chest radiographs only), how inputs are named, and atomic writing."""

from __future__ import annotations

import os

import pytest
from phi_dicom import DX_IMAGE_STORAGE, REAL, phi_dataset, rgb_dataset, sr_dataset, study_uids
from pydicom import dcmread

from privdiff.client.intake import (
    REASONS,
    NotReleasableError,
    check_chest_radiograph,
    classify_read_error,
    walk_inputs,
)
from privdiff.client.outputs import remove_stale_temporaries, write_atomically
from privdiff_core.data import ImageReadError

SECRET = b"intake test secret 0123456789abc"


def reason_of(ds) -> tuple[str, str] | None:
    try:
        check_chest_radiograph(ds)
    except NotReleasableError as refusal:
        return refusal.status, refusal.reason
    return None


def test_chest_radiographs_pass():
    assert reason_of(phi_dataset(study_uids(1))) is None  # CR, MONOCHROME1
    assert reason_of(phi_dataset(study_uids(1), modality="DX", sop_class=DX_IMAGE_STORAGE)) is None
    assert reason_of(dcmread(REAL / "rsna_cr_jpeg_baseline.dcm")) is None  # SC class, Modality CR
    unmarked = phi_dataset(study_uids(1))
    del unmarked.BodyPartExamined
    assert reason_of(unmarked) is None  # CR without a body part: a radiograph all the same
    thorax = phi_dataset(study_uids(1), modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7")
    thorax.BodyPartExamined = "THORAX"
    assert reason_of(thorax) is None


def test_everything_else_is_refused_with_its_reason():
    assert reason_of(dcmread(REAL / "ct_not_a_radiograph.dcm")) == ("refused", "not_a_radiograph")
    assert reason_of(phi_dataset(study_uids(1), modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4")) == (
        "refused",
        "not_a_radiograph",
    )
    assert reason_of(sr_dataset(study_uids(1))) == ("refused", "not_an_image")
    assert reason_of(rgb_dataset(study_uids(1))) == ("refused", "colour")
    knee = phi_dataset(study_uids(1))
    knee.BodyPartExamined = "KNEE"
    assert reason_of(knee) == ("refused", "not_chest")
    sc = phi_dataset(study_uids(1), modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7")
    sc.BodyPartExamined = ""
    assert reason_of(sc) == ("refused", "secondary_capture_not_chest")
    header_only = phi_dataset(study_uids(1))
    del header_only.PixelData
    assert reason_of(header_only) == ("failed", "truncated")  # describes an image, holds none


def test_reader_errors_become_reason_codes_without_their_text():
    cases = {
        "not a DICOM file (no 'DICM' marker after the preamble)": "not_dicom",
        "truncated pixel data: 10 of 20 bytes": "truncated",
        "multi-frame image (2 frames); a radiograph has one frame": "multi_frame",
        "unsupported bit depth: BitsStored 4 (radiographs have 8 to 16)": "unsupported_bit_depth",
        "transfer syntax X needs a pixel-data plugin that is not installed": "unsupported_transfer_syntax",
        "cannot decode pixel data (JPEG): broken": "pixel_decode_error",
        "something nobody expected, quoting DOE^JOHN": "unreadable",
    }
    for message, code in cases.items():
        refusal = classify_read_error(ImageReadError("/x/DOE_JOHN/a.dcm", message))
        assert refusal.reason == code and code in REASONS
        assert "DOE" not in str(refusal) and "DOE" not in REASONS[code]


def test_walk_names_inputs_by_salted_path_hash_and_skips_the_output(tmp_path):
    (tmp_path / "DOE_JOHN").mkdir()
    (tmp_path / "DOE_JOHN" / "a.dcm").write_bytes(b"x")
    (tmp_path / "out" / "released").mkdir(parents=True)
    (tmp_path / "out" / "released" / "b.dcm").write_bytes(b"y")
    found = walk_inputs(tmp_path, SECRET, exclude=(tmp_path / "out").resolve())
    assert [f.path.name for f in found] == ["a.dcm"]
    assert "DOE" not in found[0].ref and len(found[0].ref) == 16
    assert walk_inputs(tmp_path, b"another secret, 32 bytes long!!!", exclude=None)[0].ref != found[0].ref


def test_atomic_write_leaves_whole_files_and_sweeps_leftovers(tmp_path):
    target = tmp_path / "released" / "s" / "x.dcm"
    write_atomically(target, b"complete")
    assert target.read_bytes() == b"complete"
    write_atomically(target, b"replaced")
    assert target.read_bytes() == b"replaced"
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]
    leftover = target.parent / f".x.dcm.{os.getpid()}.7.privdiff-tmp"
    leftover.write_bytes(b"half")
    (target.parent / "keep.me").write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["keep.me", "x.dcm"]


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "released" / "y.dcm"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomically(target, b"data")
    assert list(target.parent.iterdir()) == []
