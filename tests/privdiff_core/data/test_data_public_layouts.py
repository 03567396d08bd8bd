"""ChestX-ray14 and CheXpert readers on miniature copies of their exact layouts (tests/fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from privdiff_core.attributes import FINDINGS, UNKNOWN
from privdiff_core.data import DatasetError, detect_layout, open_dataset, read_records
from privdiff_core.data.layouts.chexpert import FINDING_COLUMNS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CXR14 = FIXTURES / "chestxray14"
CHEXPERT = FIXTURES / "chexpert"


def labels_of(record) -> set[str]:
    return {name for name, value in zip(FINDINGS, record.labels, strict=True) if value == 1}


# --- ChestX-ray14 ---------------------------------------------------------------------------


def test_chestxray14_records():
    dataset = open_dataset(CXR14, size=16)
    assert detect_layout(CXR14) == "chestxray14" and dataset.layout == "chestxray14"
    records = {r.uid: r for r in dataset.records}
    assert list(records) == [
        "00000001_000.png",
        "00000001_001.png",
        "00000002_000.png",
        "00000003_000.png",
        "00000003_001.png",
        "00000004_000.png",
    ]
    assert labels_of(records["00000001_001.png"]) == {"Cardiomegaly", "Emphysema"}
    assert labels_of(records["00000002_000.png"]) == set()  # No Finding: all 14 negative ...
    assert all(all(r.label_mask) for r in dataset.records)  # ... and every label known
    assert labels_of(records["00000004_000.png"]) == {"Mass", "Nodule"}
    assert records["00000003_000.png"].patient_id == "00000003"
    assert (records["00000003_000.png"].age_group, records["00000003_000.png"].sex) == (3, 1)  # 81, F
    assert (records["00000001_000.png"].age_group, records["00000001_000.png"].sex) == (1, 0)  # 58, M
    # Images come from images/ and from the archives' images_NNN/images/ folders alike.
    assert records["00000004_000.png"].path == CXR14 / "images_002" / "images" / "00000004_000.png"


def test_chestxray14_splits_follow_the_official_lists():
    dataset = open_dataset(CXR14, size=16)
    test_ids = {r.uid for r in dataset.records if r.split == "test"}
    assert test_ids == {"00000003_000.png", "00000003_001.png"}
    assert {r.split for r in dataset.records if r.uid not in test_ids} <= {"train", "val"}
    by_patient: dict[str, set[str]] = {}
    for record in dataset.records:
        by_patient.setdefault(record.patient_id, set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_patient.values())


def test_chestxray14_images_are_read_center_cropped():
    dataset = open_dataset(CXR14, size=32)
    sample = dataset[0]
    expected = np.asarray(Image.open(CXR14 / "images" / "00000001_000.png"), dtype=np.float32) / 255
    torch.testing.assert_close(sample["image"][0], torch.from_numpy(expected * 2 - 1))
    wide = dataset[5]["image"]  # the 40 x 32 image: its central 32 x 32
    original = np.asarray(Image.open(dataset.records[5].path), dtype=np.float32) / 255
    torch.testing.assert_close(wide[0], torch.from_numpy(original[:, 4:36] * 2 - 1))


def test_chestxray14_without_split_lists_splits_by_patient(tmp_path):
    root = tmp_path / "cxr14"
    shutil.copytree(CXR14, root)
    (root / "test_list.txt").unlink()
    (root / "train_val_list.txt").unlink()
    dataset = open_dataset(root, size=8)
    assert sum(dataset.split_counts().values()) == 6
    assert dataset.records[0].split == dataset.records[1].split  # patient 1's two images


def test_chestxray14_errors(tmp_path):
    root = tmp_path / "cxr14"
    shutil.copytree(CXR14, root)
    csv_path = root / "Data_Entry_2017.csv"
    original = csv_path.read_text()
    csv_path.write_text(original.replace("Hernia,", "Hernie,"))
    with pytest.raises(DatasetError, match=r"line 5: unknown finding\(s\) Hernie"):
        open_dataset(root, size=8)
    csv_path.write_text(original.replace("Patient Gender", "Gender"))
    with pytest.raises(DatasetError, match=r"lacks column\(s\) Patient Gender"):
        open_dataset(root, size=8)
    csv_path.write_text(original)
    (root / "images" / "00000002_000.png").unlink()
    with pytest.raises(DatasetError, match=r"line 4: image '00000002_000.png' not found under"):
        open_dataset(root, size=8)
    csv_path.unlink()
    with pytest.raises(DatasetError, match="PNG images/ like ChestX-ray14, but no Data_Entry_2017.csv"):
        open_dataset(root, size=8)


# --- CheXpert -------------------------------------------------------------------------------


@pytest.mark.parametrize("root", [CHEXPERT, CHEXPERT / "CheXpert-v1.0-small"])
def test_chexpert_opens_from_its_root_or_the_folder_containing_it(root):
    dataset = open_dataset(root, size=16)
    assert dataset.layout == "chexpert" and len(dataset) == 6  # 8 rows, 2 lateral views left out
    assert all("lateral" not in r.uid for r in dataset.records)
    assert [r.patient_id for r in dataset.records] == [
        "patient00001",
        "patient00002",
        "patient00002",
        "patient00003",
        "patient64541",
        "patient64542",
    ]
    assert dataset[0]["image"].shape == (1, 16, 16)


def test_chexpert_label_mapping_and_masks():
    records = {r.uid: r for r in open_dataset(CHEXPERT, size=8).records}
    mapped = {FINDINGS.index(name) for name in FINDING_COLUMNS}
    assert len(mapped) == 7
    for record in records.values():  # findings without a CheXpert counterpart are never known
        assert not any(record.label_mask[k] for k in range(14) if k not in mapped)

    def known(uid: str) -> dict[str, float]:
        r = records[uid]
        return {name: r.labels[k] for k, name in enumerate(FINDINGS) if r.label_mask[k]}

    # Row 1: No Finding 1.0, Pneumothorax 0.0, the rest blank (unknown).
    assert known("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg") == {"Pneumothorax": 0.0}
    # Row 2: uncertain (-1.0) Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion.
    assert known("CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg") == {}
    # Row 5: Edema 1.0, Pneumothorax 0.0.
    assert known("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg") == {
        "Edema": 1.0,
        "Pneumothorax": 0.0,
    }
    # valid.csv is fully labelled: all seven mapped findings known; Pleural Effusion -> Effusion.
    second = known("CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg")
    assert set(second) == set(FINDING_COLUMNS) and second["Effusion"] == 1.0
    assert sum(second.values()) == 1.0
    first = known("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")
    assert first["Cardiomegaly"] == 1.0 and sum(first.values()) == 1.0


def test_chexpert_demographics_and_splits():
    records = open_dataset(CHEXPERT, size=8).records
    assert [(r.age_group, r.sex) for r in records][:4] == [
        (2, 1),
        (3, 1),
        (3, 1),
        (1, 0),
    ]  # 68 F, 87 F, 83 F, 41 M
    assert {r.split for r in records if "/valid/" in r.uid} == {"test"}
    assert {r.split for r in records if "/train/" in r.uid} <= {"train", "val"}
    assert all(r.age_group != UNKNOWN for r in records)


def test_chexpert_lateral_views_on_request():
    assert len(read_records(CHEXPERT, frontal_only=False)) == 8


def test_chexpert_paths_relative_to_the_root_and_renamed_roots(tmp_path):
    renamed = tmp_path / "my_chexpert"
    shutil.copytree(CHEXPERT / "CheXpert-v1.0-small", renamed)
    assert len(open_dataset(renamed, size=8)) == 6  # CSV still says CheXpert-v1.0-small/...
    csv_path = renamed / "train.csv"
    csv_path.write_text(csv_path.read_text().replace("CheXpert-v1.0-small/", ""))  # train/patient...
    assert len(open_dataset(renamed, size=8)) == 6


def test_chexpert_errors(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(CHEXPERT / "CheXpert-v1.0-small", root)
    (root / "train" / "patient00003" / "study1" / "view1_frontal.jpg").unlink()
    with pytest.raises(DatasetError, match=r"train.csv, line 6: image .*patient00003.* not found"):
        open_dataset(root, size=8)
    csv_path = root / "valid.csv"
    csv_path.write_text(csv_path.read_text().replace(",Edema,", ",Oedema,"))
    (root / "train.csv").unlink()
    with pytest.raises(DatasetError, match=r"valid.csv: CheXpert valid.csv lacks column\(s\) Edema"):
        open_dataset(root, size=8)
