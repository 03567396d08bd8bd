"""The on-disk federation: Contract 1 layout, determinism, split hygiene, safe writing."""

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from privdiff_core.attributes import FINDINGS
from privdiff_core.synth import SynthError, SynthParams, generate_federation, iter_federation
from privdiff_core.synth import federation as federation_module
from privdiff_core.synth.federation import LABEL_COLUMNS


def read_labels(site_dir: Path) -> list[dict[str, str]]:
    with open(site_dir / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_follows_contract_1(tiny_federation, tiny_params):
    out, summary = tiny_federation
    assert sorted(p.name for p in out.iterdir()) == ["federation.json", "site_00", "site_01"]
    recorded = json.loads((out / "federation.json").read_text())
    assert recorded == summary
    assert recorded["arguments"]["seed"] == tiny_params.seed and recorded["images"] == 2 * 6 * 3
    for site in ("site_00", "site_01"):
        with open(out / site / "labels.csv", newline="") as f:
            header = next(csv.reader(f))
        assert tuple(header) == ("sop_instance_uid", "file", "split", *FINDINGS) == LABEL_COLUMNS
        rows = read_labels(out / site)
        assert len(rows) == 6 * 3
        for row in rows:
            path = out / site / row["file"]
            assert path.is_file()
            assert row["file"] == f"images/{path.parent.name}/{row['sop_instance_uid']}.dcm"
            assert all(row[name] in ("0", "1") for name in FINDINGS)  # every label known


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_federation, tiny_params, tmp_path):
    out, _ = tiny_federation
    again = tmp_path / "again"
    generate_federation(again, tiny_params, progress=False)
    assert all_files(again) == all_files(out)

    other = tmp_path / "other"
    generate_federation(
        other, SynthParams(**{**tiny_params.__dict__, "seed": tiny_params.seed + 1}), progress=False
    )
    first = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert not set(all_files(other).values()) & set(all_files(out).values())
    assert first.SOPInstanceUID not in {pydicom.dcmread(p).SOPInstanceUID for p in other.rglob("*.dcm")}


def test_parallel_workers_write_the_same_bytes(tiny_federation, tiny_params, tmp_path):
    out, _ = tiny_federation
    generate_federation(tmp_path / "parallel", tiny_params, progress=False, workers=2)
    assert all_files(tmp_path / "parallel") == all_files(out)


def test_split_is_per_patient_and_covers_train_val_test(tiny_federation):
    out, summary = tiny_federation
    for site in ("site_00", "site_01"):
        split_of = defaultdict(set)
        for row in read_labels(out / site):
            header = pydicom.dcmread(out / site / row["file"], stop_before_pixels=True)
            split_of[header.PatientID].add(row["split"])
        assert all(len(splits) == 1 for splits in split_of.values()), split_of
        assert len(split_of) == 6
        counts = {s: sum(v == {s} for v in split_of.values()) for s in ("train", "val", "test")}
        assert counts == {"train": 4, "val": 1, "test": 1}
        assert summary["sites"][int(site[-2:])]["patients_per_split"] == counts


def test_split_fractions_hold_at_scale():
    from privdiff_core.synth.cohort import assign_splits

    splits = assign_splits(1000, (0.15, 0.15), seed=0, site=0)
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (700, 150, 150)
    assert assign_splits(1000, (0.15, 0.15), seed=0, site=1) != splits  # each site shuffles its own


def test_in_memory_generator_matches_the_files(tiny_federation, tiny_params):
    out, _ = tiny_federation
    for sample in iter_federation(tiny_params):
        site = sample.patient.site
        ds = pydicom.dcmread(
            out / site.name / "images" / sample.patient.patient_id / f"{sample.sop_instance_uid}.dcm"
        )
        top = (1 << site.bits_stored) - 1
        stored = ds.pixel_array.astype(np.int64)
        if site.photometric == "MONOCHROME1":
            stored = top - stored
        assert np.array_equal(stored, np.rint(sample.image * top).astype(np.int64))


def test_refuses_to_replace_a_non_empty_folder(tiny_federation, tiny_params, tmp_path):
    out, _ = tiny_federation
    with pytest.raises(SynthError, match="not empty.*--overwrite"):
        generate_federation(out, tiny_params, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(SynthError, match="no federation.json"):
        generate_federation(foreign, tiny_params, overwrite=True, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_overwrite_replaces_a_federation(tmp_path):
    small = SynthParams(sites=1, patients=3, images_per_patient=1, size=32)
    out = tmp_path / "fed"
    generate_federation(out, small, progress=False)
    generate_federation(out, SynthParams(**{**small.__dict__, "seed": 5}), overwrite=True, progress=False)
    assert json.loads((out / "federation.json").read_text())["arguments"]["seed"] == 5
    assert len(list(out.rglob("*.dcm"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fed"]  # no temporary folders left


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = federation_module.write_dicom

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(federation_module, "write_dicom", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_federation(tmp_path / "fed", SynthParams(sites=1, patients=3, images_per_patient=2, size=32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sites": 0}, "sites must be >= 1"),
        ({"size": 16}, "size must be between 32"),
        ({"images_per_patient": 0}, "images_per_patient"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave patients for training"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(changes, message):
    with pytest.raises(SynthError, match=message):
        SynthParams(**changes)


def test_settings_from_a_config_section():
    assert SynthParams.from_mapping({"sites": "2", "patients": 5, "size": 32}).patients == 5
    with pytest.raises(SynthError, match="unknown synth setting.*colour"):
        SynthParams.from_mapping({"colour": 1})
