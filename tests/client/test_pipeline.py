"""Output naming in the release pipeline: one file per input, collisions resolved, reruns stable."""

from __future__ import annotations

import numpy as np
from phi_dicom import phi_dataset, study_uids

from privdiff.client.deid import Deidentifier, UIDMapper
from privdiff.client.intake import InputFile, Prepared
from privdiff.client.release_pipeline import _claim_output_name, _Claims

MAPPER = UIDMapper(b"pipeline test secret 0123456789a")


def prepared(input_sha: str, uids=None) -> Prepared:
    ds = phi_dataset(uids or study_uids(1))
    del ds.PixelData
    Deidentifier(MAPPER)(ds)
    name = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    return Prepared(InputFile(None, "ref"), input_sha, np.zeros((4, 4), np.float32), 4, ds, name)


def test_two_files_with_one_sop_instance_uid_get_two_names_deterministically():
    claims = _Claims({}, {})
    first, second = prepared("sha-a"), prepared("sha-b")
    assert _claim_output_name(first, claims, MAPPER) and _claim_output_name(second, claims, MAPPER)
    assert first.output_name != second.output_name
    assert second.header.SOPInstanceUID == second.output_name.rsplit("/", 1)[1][:-4]
    assert first.header.StudyInstanceUID == second.header.StudyInstanceUID  # still one study
    # a rerun in which only the second is pending names it the same way
    rerun = _Claims({first.output_name: "sha-a"}, {})
    again = prepared("sha-b")
    assert _claim_output_name(again, rerun, MAPPER) and again.output_name == second.output_name


def test_a_second_copy_of_one_file_is_not_released_twice():
    claims = _Claims({}, {})
    assert _claim_output_name(prepared("sha-a"), claims, MAPPER)
    assert not _claim_output_name(prepared("sha-a"), claims, MAPPER)


def test_an_input_whose_earlier_output_was_deleted_is_released_again_under_its_name():
    original = prepared("sha-a")
    claims = _Claims({original.output_name: "sha-a"}, {})
    again = prepared("sha-a")
    assert _claim_output_name(again, claims, MAPPER) and again.output_name == original.output_name
