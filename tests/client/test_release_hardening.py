"""`privdiff-client release` against hostile inputs and failing disks, end to end with the tiny
signed anonymizer: burned-in text refused, quarantined or released only after the OCR check;
links, odd names, look-alikes and duplicates in one tree, rerun with identical counts; a
read-only output parent; a disk that fills up for the outputs, then for the audit trail."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from phi_dicom import copy_real, phi_dataset, study_uids, with_burned_in_text, write_dicom
from test_release import release, release_args, released_files

from privdiff.client.audit import AuditTrail
from privdiff.client.deid import salted_hash

CLEAN_PIXEL_DATA = "113101"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


def claims(path: Path) -> tuple[str | None, set[str]]:
    """(Burned In Annotation, de-identification method codes) of a written output."""
    ds = pydicom.dcmread(path)
    return ds.get("BurnedInAnnotation"), {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}


def statuses(out: Path, secret: bytes, names: list[str]) -> dict[str, tuple[str, str]]:
    """Latest (status, reason) of each named input (relative path, str or bytes)."""
    db = sqlite3.connect(out / "audit.sqlite")
    rows = db.execute("SELECT input_ref, status, reason FROM records ORDER BY id").fetchall()
    db.close()
    latest = {ref: (status, reason) for ref, status, reason in rows}
    refs = {name: salted_hash(secret, os.fsencode(name), "input-path")[:16] for name in names}
    return {name: latest.get(ref) for name, ref in refs.items()}


@pytest.fixture
def secret_file(tmp_path) -> tuple[Path, bytes]:
    secret = b"hardening test site secret 01234"
    (tmp_path / "secret").write_bytes(secret)
    return tmp_path / "secret", secret


# -- burned-in text --------------------------------------------------------------------------------


@pytest.fixture
def burned_in_films(tmp_path) -> Path:
    """Real CR films with a name and date drawn in: flagged MONOCHROME2 and MONOCHROME1, and one
    whose header says nothing about it (as many real films)."""
    source = tmp_path / "in"
    with_burned_in_text("rsna_cr_jpeg_baseline.dcm", source, flagged=True, new_name="flagged.dcm")
    with_burned_in_text(
        "rsna_cr_jpeg_baseline_monochrome1.dcm", source, flagged=True, new_name="flagged_m1.dcm"
    )
    with_burned_in_text("rsna_cr_jpeg_baseline.dcm", source, flagged=False, new_name="silent.dcm")
    return source


@pytest.mark.slow
def test_flagged_films_are_refused_and_released_only_after_the_ocr_check(
    tiny_model, burned_in_films, secret_file, tmp_path, capfd
):
    secret_path, secret = secret_file
    argv = release_args(tiny_model.folder, burned_in_films, tmp_path / "out", key=tiny_model.public_key)
    status, log = release([*argv, "--site-secret", str(secret_path), "--no-residual-check"], capfd)
    assert status == 1, log
    assert statuses(tmp_path / "out", secret, ["flagged.dcm", "flagged_m1.dcm", "silent.dcm"]) == {
        "flagged.dcm": ("refused", "burned_in_annotation"),
        "flagged_m1.dcm": ("refused", "burned_in_annotation"),
        "silent.dcm": ("released", "ok"),  # its 32-px redraw holds no text: OCR passed
    }
    (silent,) = released_files(tmp_path / "out")
    assert claims(silent) == ("NO", {"113100", CLEAN_PIXEL_DATA})

    # Opted in: the model redraws the flagged films too, and the OCR check passes them.
    argv = release_args(tiny_model.folder, burned_in_films, tmp_path / "opted", key=tiny_model.public_key)
    status, log = release(
        [*argv, "--site-secret", str(secret_path), "--no-residual-check", "--clean-burned-in"], capfd
    )
    assert status == 0, log
    outputs = released_files(tmp_path / "opted")
    assert len(outputs) == 3 and all(claims(p) == ("NO", {"113100", CLEAN_PIXEL_DATA}) for p in outputs)
    summary = json.loads((tmp_path / "opted" / "release_summary.json").read_text())
    assert summary["burned_in_text_check"].startswith("tesseract")


class _Unchanged:
    """The worst partial redraw, at the paper's 256 px: the anonymizer changed nothing."""

    image_size = 256
    cfg = SimpleNamespace(anonymize=SimpleNamespace(batch_size=4))

    def anonymize(self, images, conditions=None, seed=None, batch_size=None):  # Anonymizer.anonymize
        return images.clone()


@pytest.mark.slow
def test_text_that_survives_the_redraw_is_quarantined_without_clean_claims(
    tiny_model, burned_in_films, secret_file, tmp_path, capfd, monkeypatch
):
    from privdiff_core.anonymizer import Anonymizer

    monkeypatch.setattr(Anonymizer, "load", lambda folder, device="cpu": _Unchanged())
    monkeypatch.setattr("privdiff.client.release_pipeline._model_image_size", lambda folder: 256)
    secret_path, secret = secret_file
    out = tmp_path / "out"
    argv = release_args(tiny_model.folder, burned_in_films, out, key=tiny_model.public_key)
    status, log = release(
        [*argv, "--site-secret", str(secret_path), "--no-residual-check", "--clean-burned-in"], capfd
    )
    assert status == 1, log
    names = ["flagged.dcm", "flagged_m1.dcm", "silent.dcm"]
    assert set(statuses(out, secret, names).values()) == {("quarantined", "burned_in_text")}
    assert released_files(out) == []
    held = released_files(out, "quarantine")
    assert len(held) == 3 and all(claims(p) == (None, {"113100"}) for p in held)
    for word in ("DOE", "JOHN", "2019"):
        assert word not in log and word.encode() not in (out / "audit.sqlite").read_bytes()
    # Without the check nothing is claimed either, and nothing is held back for text.
    argv = release_args(tiny_model.folder, burned_in_films, tmp_path / "unchecked", key=tiny_model.public_key)
    status, log = release(
        [*argv, "--site-secret", str(secret_path), "--no-residual-check", "--no-text-check"], capfd
    )
    assert status == 1 and "burned-in text check OFF" in log  # the two flagged films: refused
    (unchecked,) = released_files(tmp_path / "unchecked")
    assert claims(unchecked) == (None, {"113100"})


# -- hostile tree -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_hostile_tree_neither_aborts_nor_fools_the_release_and_reruns_agree(
    tiny_model, secret_file, tmp_path, capfd
):
    secret_path, secret = secret_file
    source, outside, out = tmp_path / "in", tmp_path / "outside", tmp_path / "out"
    expected: dict[str, tuple[str, str]] = {}

    def radiograph(number: int, **kwargs):
        ds = phi_dataset(study_uids(number), rows=40, cols=40, seed=number, **kwargs)
        ds.BurnedInAnnotation = "NO"
        return ds

    odd_name = os.fsdecode(b"M\xfcller_\xff.dcm")  # not UTF-8
    write_dicom(radiograph(1), source / odd_name)
    expected[odd_name] = ("released", "ok")
    write_dicom(radiograph(2), outside / "elsewhere.dcm")
    (source / "link.dcm").symlink_to(outside / "elsewhere.dcm")
    expected["link.dcm"] = ("refused", "symlink")
    (source / "linked_folder").symlink_to(outside, target_is_directory=True)
    expected["linked_folder"] = ("refused", "symlink")
    os.mkfifo(source / "pipe.dcm")
    expected["pipe.dcm"] = ("refused", "not_a_regular_file")
    write_dicom(radiograph(3, modality="OT", sop_class=VL_PHOTOGRAPHIC), source / "photo.dcm")
    expected["photo.dcm"] = ("refused", "not_a_radiograph")
    spine = radiograph(4)
    spine.BodyPartExamined = "BRUSTWIRBELSAEULE"
    write_dicom(spine, source / "spine.dcm")
    expected["spine.dcm"] = ("refused", "not_chest")
    write_dicom(radiograph(5), source / "a" / "copy1.dcm")
    (source / "b").mkdir()
    (source / "b" / "copy2.dcm").write_bytes((source / "a" / "copy1.dcm").read_bytes())
    expected["a/copy1.dcm"] = ("released", "ok")
    expected["b/copy2.dcm"] = ("refused", "duplicate_input")

    argv = release_args(tiny_model.folder, source, out, key=tiny_model.public_key, secret=secret_path)
    argv += ["--quarantine-threshold", "1.0"]
    command = [
        sys.executable,
        "-m",
        "privdiff.client.cli",
        "release",
        *argv,
        "--device",
        "cpu",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr and "M\\xfc" not in first.stderr + first.stdout
    assert statuses(out, secret, list(expected)) == expected
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["counts"] == {"released": 2, "refused": 6, "failed": 0, "quarantined": 0}
    outputs = released_files(out)
    assert len(outputs) == 2

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 1, again.stderr
    rerun = json.loads((out / "release_summary.json").read_text())
    assert rerun["counts"] == summary["counts"] and rerun["reasons"] == summary["reasons"]
    assert rerun["this_run"]["processed"] == 0 and released_files(out) == outputs


# -- folders and disks that fail ---------------------------------------------------------------------


def test_a_read_only_parent_of_out_is_a_one_line_error(tiny_model, tmp_path, capfd, monkeypatch):
    source = tmp_path / "in"
    copy_real("rsna_cr_jpeg_baseline.dcm", source)
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        (parent / "probe").mkdir()
    except PermissionError:
        pass  # permissions apply to this user
    else:  # root ignores them: make mkdir fail the way it does for everyone else
        (parent / "probe").rmdir()
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if parent in self.parents or self == parent:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    status, log = release(
        release_args(tiny_model.folder, source, parent / "out", key=tiny_model.public_key), capfd
    )
    assert status == 2
    assert "Traceback" not in log and "cannot create the folder (Permission denied)" in log
    assert "nothing was released" in log
    parent.chmod(0o755)


def _inputs(source: Path, count: int) -> None:
    for index in range(count):
        ds = phi_dataset(study_uids(2000 + index), rows=40, cols=40, seed=index)
        ds.BurnedInAnnotation = "NO"
        write_dicom(ds, source / f"p{index:02d}.dcm")


@pytest.mark.slow
def test_a_full_disk_fails_outputs_one_by_one_then_stops_with_the_counts(
    tiny_model, secret_file, tmp_path, capfd, monkeypatch
):
    import privdiff.client.release_pipeline as pipeline

    secret_path, _ = secret_file
    source, out = tmp_path / "in", tmp_path / "out"
    _inputs(source, 6)
    argv = release_args(tiny_model.folder, source, out, key=tiny_model.public_key, secret=secret_path)
    argv += ["--no-residual-check", "--batch-size", "2", "--workers", "1"]

    # 1. The outputs' disk fills after two files: every later output fails alone, the run ends.
    real_write = pipeline.write_atomically
    written = []

    def write_until_full(path, data):
        if len(written) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)
        written.append(path)

    monkeypatch.setattr(pipeline, "write_atomically", write_until_full)
    status, log = release(argv, capfd)
    assert status == 3, log
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["counts"] == {"released": 2, "refused": 0, "failed": 4, "quarantined": 0}
    assert summary["reasons"] == {"write_error": 4} and len(released_files(out)) == 2
    monkeypatch.setattr(pipeline, "write_atomically", real_write)

    # 2. Then the audit trail's disk fills after two more records: rc 2, with what was released.
    real_add = AuditTrail.add
    added = []

    def add_until_full(self, record):
        if len(added) >= 2:
            raise sqlite3.OperationalError("database or disk is full")
        real_add(self, record)
        added.append(record)

    monkeypatch.setattr(AuditTrail, "add", add_until_full)
    status, log = release(argv, capfd)
    assert status == 2, log
    assert "Traceback" not in log and "database or disk is full" in log
    on_disk = len(released_files(out))
    assert 4 <= on_disk <= 5  # 2 earlier + 2 recorded now (+ the one whose record failed)
    assert f"{on_disk} file(s) are in OUT/released" in log and "rerun to resume" in log
    monkeypatch.setattr(AuditTrail, "add", real_add)

    # 3. Space again: a rerun finishes the job, one output per input.
    status, log = release(argv, capfd)
    assert status == 0, log
    assert len(released_files(out)) == 6
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["counts"] == {"released": 6, "refused": 0, "failed": 0, "quarantined": 0}
