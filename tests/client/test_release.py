"""`privdiff-client release` end to end with a real (tiny) signed anonymizer: real fixture files,
synthetic files with PHI planted everywhere, refusals, resume after kill -9, signatures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from phi_dicom import (
    DX_IMAGE_STORAGE,
    PHI_TEXT,
    copy_real,
    multiframe_dataset,
    phi_dataset,
    rgb_dataset,
    sr_dataset,
    study_uids,
    write_dicom,
)

from privdiff.client.cli import main
from privdiff.client.deid import UIDMapper, salted_hash

PATH_PHI = "PHIDOE_JOHNATHAN"  # a folder named after the patient: paths are PHI too
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def input_ref(secret: bytes, relative: str) -> str:
    return salted_hash(secret, relative.encode(), "input-path")[:16]


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file: inputs must come out untouched."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def released_files(out: Path, folder: str = "released") -> list[Path]:
    return sorted((out / folder).rglob("*.dcm")) if (out / folder).is_dir() else []


def records(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "audit.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM records ORDER BY id")]
    finally:
        db.close()


def release(argv: list[str], capfd) -> tuple[int, str]:
    status = main(["release", *argv, "--no-progress", "--device", "cpu"])
    captured = capfd.readouterr()
    return status, captured.out + captured.err


def release_args(
    model: Path, source: Path, out: Path, *, key: Path | None = None, secret: Path | None = None
) -> list[str]:
    """`release`'s usual arguments: the model (and the key it must be signed with), in, out, site secret."""
    argv = ["--model", str(model)] + (["--public-key", str(key)] if key is not None else [])
    argv += ["--in", str(source), "--out", str(out)]
    argv += ["--own-verifier"]  # the main tests' judge; the site verifier's tests pass --verifier
    return argv + (["--site-secret", str(secret)] if secret is not None else [])


# -- the main release: one run, many properties ------------------------------------------------------


@dataclass
class MainRelease:
    source: Path
    out: Path
    secret: bytes
    status: int
    log: str
    before: dict
    expected: dict[str, tuple[str, str]]  # relative input path -> (status, reason)
    uids: dict[str, object]
    argv: list[str]


@pytest.fixture(scope="module")
def main_release(tiny_model, tmp_path_factory) -> MainRelease:
    root = tmp_path_factory.mktemp("main_release")
    source, out = root / "in", root / "out"
    patient = source / PATH_PHI
    secret = b"main release site secret 0123456"
    (root / "secret").write_bytes(secret)
    study_a, sc_uids = study_uids(100), study_uids(300)
    second_sop, second_series = study_a.sop + ".9", study_a.series + ".9"
    expected = {}

    def add(relative: str, status: str, reason: str) -> None:
        expected[f"{PATH_PHI}/{relative}"] = (status, reason)

    copy_real("rsna_cr_jpeg_baseline.dcm", patient)
    add("rsna_cr_jpeg_baseline.dcm", "released", "ok")
    copy_real("rsna_cr_jpeg_baseline_monochrome1.dcm", patient)  # same SOP Instance UID, other content
    add("rsna_cr_jpeg_baseline_monochrome1.dcm", "released", "ok")
    copy_real("ct_not_a_radiograph.dcm", patient)
    add("ct_not_a_radiograph.dcm", "refused", "not_a_radiograph")
    copy_real("nih_00000001_000.png", patient)
    add("nih_00000001_000.png", "refused", "not_dicom")
    # study A: two images in two series; the first references the second as its source
    write_dicom(phi_dataset(study_a, source_sop=second_sop), patient / "study_a" / "image1.dcm")
    add("study_a/image1.dcm", "released", "ok")
    write_dicom(
        phi_dataset(study_a, series=second_series, sop=second_sop, seed=1),
        patient / "study_a" / "IMG0002",
        implicit=True,
    )
    add("study_a/IMG0002", "released", "ok")
    full = (patient / "study_a" / "image1.dcm").read_bytes()
    (patient / "truncated.dcm").write_bytes(full[: len(full) - 3000])
    add("truncated.dcm", "failed", "truncated")
    sc = phi_dataset(sc_uids, modality="OT", sop_class=SECONDARY_CAPTURE, seed=2)
    write_dicom(sc, patient / "sc_chest.dcm")
    add("sc_chest.dcm", "released", "ok")
    sc_other = phi_dataset(study_uids(301), modality="OT", sop_class=SECONDARY_CAPTURE)
    del sc_other.BodyPartExamined
    write_dicom(sc_other, patient / "sc_unmarked.dcm")
    add("sc_unmarked.dcm", "refused", "secondary_capture_not_chest")
    hand = phi_dataset(study_uids(302), modality="DX", sop_class=DX_IMAGE_STORAGE)
    hand.BodyPartExamined = "HAND"
    write_dicom(hand, patient / "dx_hand.dcm")
    add("dx_hand.dcm", "refused", "not_chest")
    write_dicom(sr_dataset(study_uids(303)), patient / "report.dcm")
    add("report.dcm", "refused", "not_an_image")
    write_dicom(rgb_dataset(study_uids(304)), patient / "colour.dcm")
    add("colour.dcm", "refused", "colour")
    write_dicom(multiframe_dataset(study_uids(305)), patient / "cine.dcm")
    add("cine.dcm", "refused", "multi_frame")
    (patient / "notes.txt").write_text(f"{PHI_TEXT['patient_name']} seen on {PHI_TEXT['study_date']}")
    add("notes.txt", "refused", "not_dicom")
    (patient / "empty.dcm").write_bytes(b"")
    add("empty.dcm", "refused", "not_dicom")

    before = tree_state(source)
    argv = release_args(tiny_model.folder, source, out, key=tiny_model.public_key, secret=root / "secret")
    # Every planted file flags burned-in text (Burned In Annotation YES): the site opts in to pixel
    # cleaning, and the OCR check of each output decides.
    argv += ["--quarantine-threshold", "1.0", "--batch-size", "4", "--clean-burned-in"]
    # A real process, so every byte it prints (progress bar included) is captured.
    result = subprocess.run(
        [sys.executable, "-m", "privdiff.client.cli", "release", *argv, "--device", "cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    uids = {"study_a": study_a, "second_sop": second_sop, "sc": sc_uids}
    log = result.stdout + result.stderr
    return MainRelease(source, out, secret, result.returncode, log, before, expected, uids, argv)


@pytest.mark.slow
def test_statuses_reasons_and_exit_status(main_release):
    m = main_release
    assert m.status == 3, m.log  # something failed (the truncated file)
    by_ref = {r["input_ref"]: r for r in records(m.out)}
    assert len(by_ref) == len(records(m.out)) == len(m.expected)  # one record per input
    for relative, (status, reason) in m.expected.items():
        record = by_ref[input_ref(m.secret, relative)]
        assert (record["status"], record["reason"]) == (status, reason), relative
    summary = json.loads((m.out / "release_summary.json").read_text())
    assert summary["counts"] == {"released": 5, "refused": 9, "failed": 1, "quarantined": 0}
    assert summary["signed"] is True and summary["exit_status"] == 3


@pytest.mark.slow
def test_outputs_open_with_valid_pixels_of_the_models_size(main_release, tiny_model):
    files = released_files(main_release.out)
    assert len(files) == 5
    size = tiny_model.image_size
    for path in files:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        assert pixels.shape == (size, size) and pixels.dtype.name == "uint16"
        assert pixels.max() <= 4095 and pixels.std() > 0
        assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert path.parent.name == ds.SeriesInstanceUID and path.parent.parent.name == ds.StudyInstanceUID
        assert tiny_model.key_id in ds.DerivationDescription
        assert ds.PatientIdentityRemoved == "YES" and ds.BurnedInAnnotation == "NO"


@pytest.mark.slow
def test_no_phi_in_outputs_audit_summary_or_logs(main_release):
    m = main_release
    uids = m.uids
    forbidden = [v.encode() for v in PHI_TEXT.values() if len(v) > 4]
    forbidden += [v.replace("^", " ").encode() for v in PHI_TEXT.values() if "^" in v]
    forbidden += [
        PATH_PHI.encode(),
        b"study_a",
        b"IMG0002",
        b"rsna_cr",
        b"16d7f894-55d7-4d95-8957-d18987f0e981",
    ]
    forbidden += [
        uid.encode()
        for uid in (
            uids["study_a"].study,
            uids["study_a"].series,
            uids["study_a"].sop,
            uids["second_sop"],
            uids["sc"].study,
            uids["sc"].sop,
        )
    ]
    forbidden += [b"1.2.276.0.7230010.3.1", b"KAUFMAN", b"6774825273", b"19430722"]
    scanned = [p for p in m.out.rglob("*") if p.is_file()]
    assert any(p.name == "audit.sqlite" for p in scanned) and len(released_files(m.out)) == 5
    for path in scanned:
        data = path.read_bytes()
        for value in forbidden:
            assert value not in data, (path.name, value)
    for value in forbidden:
        assert value.decode() not in m.log, value


@pytest.mark.slow
def test_one_study_stays_one_study_and_references_follow(main_release):
    m = main_release
    mapper = UIDMapper(m.secret)
    outputs = [pydicom.dcmread(p) for p in released_files(m.out)]
    study_a = [ds for ds in outputs if ds.StudyInstanceUID == mapper(m.uids["study_a"].study)]
    assert len(study_a) == 2
    first, second = sorted(study_a, key=lambda ds: "SourceImageSequence" in ds, reverse=True)
    assert first.SeriesInstanceUID != second.SeriesInstanceUID
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID == second.SOPInstanceUID
    assert second.SOPInstanceUID == mapper(m.uids["second_sop"])
    # the two RSNA files share every UID: one study, one series, two instances
    rsna = [
        ds for ds in outputs if ds.Modality == "CR" and ds.StudyInstanceUID not in (first.StudyInstanceUID,)
    ]
    rsna = [ds for ds in rsna if "DERIVED" in ds.ImageType and ds.get("LossyImageCompression") == "01"]
    assert len({ds.StudyInstanceUID for ds in rsna}) == 1 and len({ds.SOPInstanceUID for ds in rsna}) == 2


@pytest.mark.slow
def test_inputs_are_never_modified(main_release):
    assert tree_state(main_release.source) == main_release.before


@pytest.mark.slow
def test_rerun_resumes_without_duplicates(main_release, capfd):
    m = main_release
    names_before = released_files(m.out)
    count_before = len(records(m.out))
    # the same command again: everything finished is skipped, the failed file is retried
    status, log = release(m.argv, capfd)
    assert status == 3
    assert released_files(m.out) == names_before
    new = records(m.out)[count_before:]
    assert [(r["status"], r["reason"]) for r in new] == [("failed", "truncated")]
    assert "1 processed now, 14 done earlier" in log
    summary = json.loads((m.out / "release_summary.json").read_text())
    assert summary["counts"] == {"released": 5, "refused": 9, "failed": 1, "quarantined": 0}
    assert sum(summary["reasons"].values()) == 10 and summary["reasons"]["not_dicom"] == 3
    assert tree_state(m.source) == m.before


# -- kill -9 and resume ---------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The release's reader processes (its Tesseract runs, short-lived children of the writer
    thread, are not readers: a killed release leaves them to finish their one image)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found if "tesseract" not in Path(f"/proc/{child}/comm").read_text()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@pytest.mark.slow
def test_killed_release_resumes_with_exactly_one_output_per_input(tiny_model, tmp_path, capfd):
    source, out = tmp_path / "in", tmp_path / "out"
    n_inputs = 16
    for index in range(n_inputs):
        write_dicom(
            phi_dataset(study_uids(1000 + index), rows=40, cols=40, seed=index), source / f"p{index:02d}.dcm"
        )
    before = tree_state(source)
    (tmp_path / "secret").write_bytes(b"kill test site secret 0123456789")
    argv = release_args(tiny_model.folder, source, out, key=tiny_model.public_key, secret=tmp_path / "secret")
    argv += ["--quarantine-threshold", "1.0", "--clean-burned-in"]  # the planted files flag burned-in text
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privdiff.client.cli",
            "release",
            *argv,
            "--batch-size",
            "1",
            "--workers",
            "1",
            "--no-progress",
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 600
    while len(released_files(out)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    readers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the release finished before it could be killed"
    assert readers  # the reader processes, orphaned now: they must go by themselves
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in readers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in readers)
    written = released_files(out)
    assert 3 <= len(written) < n_inputs
    for path in written:  # a killed run leaves whole files or none: every visible output opens
        assert pydicom.dcmread(path).pixel_array.shape == (tiny_model.image_size,) * 2

    status, log = release(argv, capfd)
    assert status == 0, log
    final = released_files(out)
    assert len(final) == n_inputs and set(written) <= set(final)
    assert not [p for p in out.rglob("*") if p.is_file() and "tmp" in p.name]
    latest = {}
    for record in records(out):
        latest[record["input_sha"]] = record
    assert len(latest) == n_inputs
    assert sorted(r["output"] for r in latest.values()) == sorted(
        p.relative_to(out).as_posix() for p in final
    )
    assert all(r["status"] == "released" for r in latest.values())
    assert tree_state(source) == before


# -- trust: signatures before anything ------------------------------------------------------------


def _unsigned_copy(tiny_model, tmp_path) -> Path:
    folder = Path(shutil.copytree(tiny_model.folder, tmp_path / "unsigned"))
    (folder / "signature.json").unlink()
    return folder


def test_unsigned_model_is_refused_before_the_inputs_are_looked_at(tiny_model, tmp_path, capfd):
    model = _unsigned_copy(tiny_model, tmp_path)
    out = tmp_path / "out"
    # --in does not even exist: the signature problem is what the user hears about
    status, log = release(release_args(model, tmp_path / "missing", out), capfd)
    assert status == 2 and "signature" in log and "--allow-unsigned" in log
    assert not out.exists()
    status, log = release(release_args(model, tmp_path / "missing", out, key=tiny_model.public_key), capfd)
    assert status == 2 and "not signed" in log and not out.exists()


def test_model_signed_by_another_key_or_changed_is_refused(tiny_model, tmp_path, capfd):
    source = tmp_path / "in"
    copy_real("rsna_cr_jpeg_baseline.dcm", source)
    argv = release_args(tiny_model.folder, source, tmp_path / "out", key=tiny_model.other_public_key)
    status, log = release(argv, capfd)
    assert status == 2 and "signed by key" in log and not (tmp_path / "out").exists()
    tampered = Path(shutil.copytree(tiny_model.folder, tmp_path / "tampered"))
    config = next(tampered.rglob("config.json"))
    config.write_text(config.read_text() + " ")
    status, log = release(release_args(tampered, source, tmp_path / "out", key=tiny_model.public_key), capfd)
    assert status == 2 and "changed after signing" in log and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unsigned_release_is_loud_and_quarantine_holds_back(tiny_model, site_verifier, tmp_path, capfd):
    """--allow-unsigned says so everywhere; a site verifier and threshold 0 quarantine everything."""
    source, out = tmp_path / "in", tmp_path / "out"
    copy_real("rsna_cr_jpeg_baseline.dcm", source)
    (tmp_path / "secret").write_bytes(b"quarantine test site secret 0123")
    model = _unsigned_copy(tiny_model, tmp_path)
    argv = release_args(model, source, out, secret=tmp_path / "secret")
    argv += ["--allow-unsigned", "--verifier", str(site_verifier), "--quarantine-threshold", "0"]
    status, log = release(argv, capfd)
    assert status == 1, log  # nothing failed, something held back
    assert "UNSIGNED" in log
    assert released_files(out) == [] and len(released_files(out, "quarantine")) == 1
    (record,) = records(out)
    assert (record["status"], record["reason"], record["key_id"]) == (
        "quarantined",
        "residual_risk",
        "UNSIGNED",
    )
    assert 0.0 < record["same_patient_probability"] < 1.0
    db = sqlite3.connect(out / "audit.sqlite")
    assert db.execute("SELECT signed, key_id, residual_check FROM runs").fetchall() == [
        (0, "UNSIGNED", "site verifier")
    ]
    db.close()
    summary = json.loads((out / "release_summary.json").read_text())
    assert summary["counts"]["quarantined"] == 1 and summary["signed"] is False
    assert "UNSIGNED" in pydicom.dcmread(released_files(out, "quarantine")[0]).DerivationDescription


# -- a whole synthetic hospital export ------------------------------------------------------------

PHI_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
    "OperatorsName", "InstitutionName", "StationName", "StudyID", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "DeviceSerialNumber", "InstitutionAddress",
)  # fmt: skip


@pytest.mark.slow
def test_synthetic_site_export_is_released_clean(tiny_model, synthetic_federation, tmp_path, capfd):
    """`privdiff synth` writes site folders the way a hospital exports them (DX and CR, MONOCHROME1,
    10/12-bit, names, IDs, institutions): every image is released, none of that survives."""
    source = Path(shutil.copytree(synthetic_federation, tmp_path / "export"))
    dicoms = sorted(source.rglob("*.dcm"))
    others = [p for p in source.rglob("*") if p.is_file() and p.suffix != ".dcm"]  # labels.csv, ...
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicoms]
    secret = b"synthetic site secret 0123456789"
    (tmp_path / "secret").write_bytes(secret)
    out = tmp_path / "out"
    argv = release_args(tiny_model.folder, source, out, key=tiny_model.public_key, secret=tmp_path / "secret")
    status, log = release([*argv, "--quarantine-threshold", "1.0"], capfd)
    assert status == (1 if others else 0), log  # the non-DICOM files are refused, nothing failed
    outputs = released_files(out)
    assert len(outputs) == len(dicoms)
    forbidden = {str(h.get(k)) for h in headers for k in PHI_KEYWORDS if h.get(k)} - {""}
    assert len(forbidden) > 4 * len(dicoms) // 3
    blobs = [p.read_bytes() for p in outputs] + [(out / "audit.sqlite").read_bytes()]
    for value in forbidden:
        assert value not in log
        for blob in blobs:
            assert value.encode() not in blob, value
    released = [pydicom.dcmread(p) for p in outputs]
    assert all("PatientAge" not in ds and ds.PatientSex == "" for ds in released)
    mapper = UIDMapper(secret)
    studies: dict[str, int] = {}
    for header in headers:
        studies[mapper(header.StudyInstanceUID)] = studies.get(mapper(header.StudyInstanceUID), 0) + 1
    assert {uid: sum(ds.StudyInstanceUID == uid for ds in released) for uid in studies} == studies
