"""The site layout (Contract 1) and federation folders, with DICOMs written here in that layout."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from data_dicom_factory import gradient, make_dataset, write_site
from pydicom.uid import RLELossless

from privdiff_core.attributes import FINDINGS, UNKNOWN
from privdiff_core.data import CXRTensors, DatasetError, ImageReadError, detect_layout, open_dataset

SAMPLE_KEYS = {"image", "patient_id", "age_group", "sex", "labels", "label_mask", "uid"}


def _site_images():
    """Five images of three patients, covering the encodings a site may send."""
    ramp8 = gradient(32, 32, high=255)
    ramp12 = gradient(32, 32, high=4095, dtype=np.uint16)
    return [
        (
            make_dataset(ramp8, bits_stored=8, patient_id="A", age="045Y", sex="F"),
            "train",
            {"Cardiomegaly": "1"},
        ),
        (
            make_dataset(ramp12, bits_stored=12, patient_id="A", age="046Y", sex="F", window=(2048, 4096)),
            "train",
            {"Cardiomegaly": "0", "Effusion": "1"},
        ),
        (
            make_dataset(
                ramp8, bits_stored=8, photometric="MONOCHROME1", patient_id="B", age="071Y", sex="M"
            ),
            "val",
            {},
        ),
        (
            make_dataset(ramp12, bits_stored=12, patient_id="C", age="", sex="O", slope=0.5, intercept=100.0),
            "test",
            {name: "0" for name in FINDINGS},
        ),
        (make_dataset(ramp8, bits_stored=8, patient_id="C", age="062", sex="M", modality="DX"), "test", {}),
    ]


@pytest.fixture
def site(tmp_path):
    return write_site(tmp_path / "site_00", _site_images())


def test_samples_follow_contract_two(site):
    dataset = open_dataset(site, size=16)
    assert dataset.layout == "site" and len(dataset) == 5
    sample = dataset[0]
    assert set(sample) == SAMPLE_KEYS
    assert sample["image"].shape == (1, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["image"].min() >= -1.0 and sample["image"].max() <= 1.0
    assert sample["labels"].shape == (14,) and sample["labels"].dtype == torch.float32
    assert sample["label_mask"].shape == (14,) and sample["label_mask"].dtype == torch.bool
    assert isinstance(sample["patient_id"], str) and isinstance(sample["uid"], str)
    assert isinstance(sample["age_group"], int) and isinstance(sample["sex"], int)


def test_identity_age_and_sex_come_from_the_dicom_header(site):
    dataset = open_dataset(site, size=16)
    header = [(r.patient_id, r.age_group, r.sex) for r in dataset.records]
    assert header == [("A", 1, 1), ("A", 1, 1), ("B", 2, 0), ("C", UNKNOWN, UNKNOWN), ("C", 2, 0)]
    with open(site / "labels.csv") as handle:
        assert [row["sop_instance_uid"] for row in csv.DictReader(handle)] == [r.uid for r in dataset.records]


def test_labels_and_masks_follow_the_csv(site):
    dataset = open_dataset(site, size=16)
    cardio, effusion = FINDINGS.index("Cardiomegaly"), FINDINGS.index("Effusion")
    first, second, third, fourth = (dataset[k] for k in range(4))
    assert first["labels"][cardio] == 1 and first["label_mask"].sum() == 1 and first["label_mask"][cardio]
    assert (
        second["labels"][cardio] == 0 and second["labels"][effusion] == 1 and second["label_mask"].sum() == 2
    )
    assert not third["label_mask"].any() and (third["labels"] == 0).all()
    assert fourth["label_mask"].all() and (fourth["labels"] == 0).all()


def test_encodings_read_to_the_same_picture(tmp_path):
    """8-bit, MONOCHROME1, 12-bit with rescale, RLE: one ramp, so one picture after reading."""
    images = _site_images()
    plain = open_dataset(write_site(tmp_path / "plain", images), size=32)
    rle = open_dataset(write_site(tmp_path / "rle", _site_images(), compress=RLELossless), size=32)
    for index in range(5):
        torch.testing.assert_close(rle[index]["image"], plain[index]["image"])
    reference = plain[0]["image"]  # 8-bit MONOCHROME2, min..max
    torch.testing.assert_close(plain[2]["image"], -reference)  # MONOCHROME1 of the same stored ramp
    torch.testing.assert_close(plain[3]["image"], reference, atol=2 / 255, rtol=0)  # 12-bit, rescaled
    torch.testing.assert_close(plain[1]["image"], reference, atol=2 / 255, rtol=0)  # 12-bit, full window


def test_splits_are_per_patient(site):
    dataset = open_dataset(site, size=16)
    assert dataset.split_counts() == {"train": 2, "val": 1, "test": 2}
    assert set(dataset.split("test").patient_ids) == {"C"}
    assert len(open_dataset(site, size=16, split="train")) == 2
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        dataset.split("dev")


def test_load_tensors_stacks_the_samples(site):
    dataset = open_dataset(site, size=16)
    tensors = dataset.load_tensors(progress=False)
    assert isinstance(tensors, CXRTensors) and len(tensors) == 5
    assert tensors.image.shape == (5, 1, 16, 16) and tensors.images is tensors.image
    for index in range(5):
        sample = dataset[index]
        torch.testing.assert_close(tensors.image[index], sample["image"])
        torch.testing.assert_close(tensors.labels[index], sample["labels"])
        assert torch.equal(tensors.label_mask[index], sample["label_mask"])
        assert tensors.age_group[index] == sample["age_group"] and tensors.sex[index] == sample["sex"]
        assert tensors.patient_ids[index] == sample["patient_id"] and tensors.uids[index] == sample["uid"]
    picked = tensors.subset([4, 0])
    assert picked.patient_ids == ["C", "A"] and torch.equal(picked.image[1], tensors.image[0])


def test_federation_pools_sites_and_prefixes_patient_ids(tmp_path):
    write_site(tmp_path / "site_00", _site_images()[:2])
    write_site(tmp_path / "site_01", _site_images()[:3])  # patient "A" again, a different person
    (tmp_path / "federation.json").write_text("{}")
    dataset = open_dataset(tmp_path, size=8)
    assert detect_layout(tmp_path) == "federation" and len(dataset) == 5
    assert dataset.patient_ids == ["site_00/A", "site_00/A", "site_01/A", "site_01/A", "site_01/B"]
    assert [r.site for r in dataset.records] == ["site_00"] * 2 + ["site_01"] * 3


def _rewrite_csv(site, edit):
    path = site / "labels.csv"
    rows = list(csv.reader(path.open()))
    path.write_text("\n".join(",".join(row) for row in edit(rows)) + "\n")


def test_missing_labels_csv(site):
    (site / "labels.csv").unlink()
    with pytest.raises(DatasetError, match=r"site_00: a site folder with DICOM images/ but no labels.csv"):
        open_dataset(site, size=16)


def test_csv_with_missing_columns(site):
    _rewrite_csv(site, lambda rows: [row[:3] + row[4:] for row in rows])  # drop "Atelectasis"
    with pytest.raises(DatasetError, match=r"labels.csv: site labels file .* lacks column\(s\) Atelectasis"):
        open_dataset(site, size=16)


def test_bad_values_and_mismatched_uids(site):
    _rewrite_csv(site, lambda rows: [rows[0], rows[1][:3] + ["yes"] + rows[1][4:]])
    with pytest.raises(DatasetError, match=r"line 2: Atelectasis must be 1, 0 or empty, got 'yes'"):
        open_dataset(site, size=16)
    _rewrite_csv(site, lambda rows: [rows[0], ["1.2.3", *rows[1][1:3], "", *rows[1][4:]]])
    with pytest.raises(DatasetError, match=r"sop_instance_uid '1.2.3' does not match the file's"):
        open_dataset(site, size=16)


def test_referenced_image_that_does_not_exist(site):
    next((site / "images" / "B").glob("*.dcm")).unlink()
    with pytest.raises(DatasetError, match=r"labels.csv, line 4: image 'images/B/.*\.dcm' does not exist"):
        open_dataset(site, size=16)


def test_empty_and_unknown_folders(tmp_path, site):
    _rewrite_csv(site, lambda rows: rows[:1])
    with pytest.raises(DatasetError, match="lists no images"):
        open_dataset(site, size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"unknown data layout; expected a site folder \(labels.csv"):
        open_dataset(tmp_path / "empty", size=16)
    with pytest.raises(DatasetError, match="data folder not found"):
        open_dataset(tmp_path / "nowhere", size=16)


def test_empty_split_is_an_error(site):
    _rewrite_csv(site, lambda rows: [rows[0]] + [row[:2] + ["train"] + row[3:] for row in rows[1:]])
    with pytest.raises(DatasetError, match=r"no images in split 'val' \(train 5, val 0, test 0\)"):
        open_dataset(site, size=16, split="val")


def test_the_evaluation_names_the_splits_its_data_lacks(site):
    from privdiff_core.config import load_config
    from privdiff_core.evaluation.pipeline import EvaluationError, load_split_tensors

    cfg = load_config("tiny")
    tensors = load_split_tensors(cfg, site, progress=False)
    assert {k: len(v) for k, v in tensors.items()} == {"train": 2, "val": 1, "test": 2}
    _rewrite_csv(site, lambda rows: [rows[0]] + [row[:2] + ["train"] + row[3:] for row in rows[1:]])
    with pytest.raises(EvaluationError, match=r"has no val or test images \(train 5, val 0, test 0\)"):
        load_split_tensors(cfg, site, progress=False)


def test_corrupt_dicom_names_the_file(site):
    victim = next((site / "images" / "B").glob("*.dcm"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 200])  # pixel data cut short
    dataset = open_dataset(site, size=16)  # the header still reads
    with pytest.raises(ImageReadError, match=rf"{victim.name}: truncated pixel data"):
        dataset.load_tensors(progress=False)
