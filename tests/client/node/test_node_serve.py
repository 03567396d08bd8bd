"""`privdiff-client serve` end to end, real processes on 127.0.0.1 only: DCMTK's storescu and
pynetdicom's SCU send as the PACS and a modality, DCMTK's storescp stores as the research archive,
and the node in between is killed with -9 mid-study and mid-release."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from dicom_net import (
    Processes,
    archived,
    free_port,
    port_open,
    pynetdicom_store,
    storescp_command,
    storescu,
    wait_for,
)
from phi_dicom import DX_IMAGE_STORAGE, PHI_TEXT, copy_real, phi_dataset, study_uids, write_dicom

from privdiff.client.node.queue import NodeQueue

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def node_command(
    tiny_model, node_dir: Path, port: int, archive_port: int, quiet: float, log_file: Path | None = None
) -> list[str]:
    secret = node_dir.parent / "site_secret"
    if not secret.exists():
        secret.write_bytes(b"node end-to-end site secret 0123")
    return [
        sys.executable,
        "-m",
        "privdiff.client.cli",
        "serve",
        "--node-dir",
        str(node_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--allow-ae",
        "PACS",
        "MODALITY1",
        "--destination",
        f"ARCHIVE@127.0.0.1:{archive_port}",
        "--quiet-time",
        str(quiet),
        # OCR verdicts are the release tests' subject (tests/client/test_ocr.py): the tiny model's
        # 32 px outputs scaled up to a 1024 px film now and then read as text and are quarantined.
        "--no-text-check",
        "--retry-max",
        "1",
        "--model",
        str(tiny_model.folder),
        "--public-key",
        str(tiny_model.public_key),
        "--site-secret",
        str(secret),
        "--own-verifier",
        "--quarantine-threshold",
        "1.0",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--threads",
        "1",
        *(["--log-file", str(log_file)] if log_file else []),
    ]


def counts(node_dir: Path) -> dict[str, int]:
    queue = NodeQueue(node_dir)
    try:
        return queue.counts()
    finally:
        queue.close()


def last_forward_error(node_dir: Path) -> str:
    queue = NodeQueue(node_dir)
    try:
        return queue.last_forward_error()
    finally:
        queue.close()


def start_node(processes: Processes, name: str, command: list[str], port: int) -> subprocess.Popen:
    node = processes.start(name, command, ENV)
    wait_for(lambda: port_open(port) or node.poll() is not None, 300, "the node to listen", every=0.2)
    assert node.poll() is None, processes.log(name)
    return node


def release_running(node_dir: Path) -> bool:
    """A release is between its start (model loaded, run recorded) and its end."""
    audit = node_dir / "release" / "audit.sqlite"
    if not audit.exists():
        return False
    db = sqlite3.connect(audit)
    try:
        return bool(db.execute("SELECT COUNT(*) FROM runs WHERE finished IS NULL").fetchone()[0])
    except sqlite3.OperationalError:  # the release is creating its tables
        return False
    finally:
        db.close()


def films_without_burned_in_text(*args, **kwargs):
    """The PHI fixture's dataset, its header saying no text is burned in (the fixture says YES,
    which the release refuses unless the site opts in to cleaning and keeps the OCR check on)."""
    ds = phi_dataset(*args, **kwargs)
    ds.BurnedInAnnotation = "NO"
    return ds


def kill_9(node: subprocess.Popen) -> None:
    node.send_signal(signal.SIGKILL)
    node.wait(timeout=30)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def forbidden_values(sent: list[Path]) -> list[bytes]:
    """The PHI hunt of the folder release: every planted value, and the identifiers of the files sent."""
    values = [v.encode() for v in PHI_TEXT.values() if len(v) > 4]
    values += [v.replace("^", " ").encode() for v in PHI_TEXT.values() if "^" in v]
    for path in sent:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "PatientID",
            "AccessionNumber",
        ):
            value = str(ds.get(keyword, "") or "")
            if len(value) > 4:
                values.append(value.encode())
        name = str(ds.get("PatientName", "") or "")
        values += [part.encode() for part in name.split("^") if len(part) > 4]
    return values


@pytest.mark.slow
def test_pacs_to_archive_through_the_node(tiny_model, synthetic_federation, tmp_path):
    pacs = tmp_path / "pacs"
    study = study_uids(700)
    sent_by_pacs = [
        copy_real("rsna_cr_jpeg_baseline.dcm", pacs),  # real, JPEG baseline
        copy_real("rsna_cr_jpeg_baseline_monochrome1.dcm", pacs),  # same SOP Instance UID, other pixels
        write_dicom(films_without_burned_in_text(study, seed=1), pacs / "a1.dcm"),
        write_dicom(
            films_without_burned_in_text(study, sop=study.sop + ".2", seed=2), pacs / "a2.dcm", implicit=True
        ),
    ]
    hand = films_without_burned_in_text(study_uids(701), modality="DX", sop_class=DX_IMAGE_STORAGE)
    hand.BodyPartExamined = "HAND"
    sent_by_pacs.append(write_dicom(hand, pacs / "hand.dcm"))  # accepted, then refused by the release
    sent_by_modality = sorted(synthetic_federation.rglob("*.dcm"))[:4]
    node_dir, archive, ops_log = tmp_path / "node", tmp_path / "archive", tmp_path / "ops" / "node.log"
    port, archive_port = free_port(), free_port()
    processes = Processes(tmp_path / "logs")
    try:
        processes.start("archive", storescp_command(archive_port, archive), ENV)
        command = node_command(tiny_model, node_dir, port, archive_port, 2, log_file=ops_log)
        node = start_node(processes, "node", command, port)
        result = storescu(sent_by_pacs, port, "PACS")
        assert result.returncode == 0, result.stdout + result.stderr
        assert pynetdicom_store(sent_by_modality, port, "MODALITY1") == [0] * 4

        def settled():
            now = counts(node_dir)
            return now["pending"] == 0 and now["forward_pending"] == 0 and now

        final = wait_for(settled, 600, "the studies to be released and forwarded")
        assert (final["received"], final["released"], final["refused"]) == (9, 8, 1), final
        assert (final["forwarded"], final["quarantined"], final["failed"]) == (8, 0, 0), final

        stored = archived(archive)
        assert len(stored) == 8 and len({ds.SOPInstanceUID for ds in stored}) == 8
        size = tiny_model.image_size
        for ds in stored:
            assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.PatientIdentityRemoved == "YES"
            assert ds.pixel_array.shape == (size, size) and tiny_model.key_id in ds.DerivationDescription
        forbidden = forbidden_values(sent_by_pacs + sent_by_modality)
        for path in archive.iterdir():
            data = path.read_bytes()
            for value in forbidden:
                assert value not in data, (path.name, value)
        second = subprocess.run(  # one node per folder: a second would release the same queue
            node_command(tiny_model, node_dir, free_port(), archive_port, 2),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert second.returncode == 2 and "another node is running" in second.stderr, second.stderr
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
        log = processes.log("node")
        # --log-file: the node's lines and its spawned release process's, plain, and no PHI either
        ops = ops_log.read_text()
        assert " INFO privdiff.serve: listening as" in ops and "\x1b" not in ops
        assert " INFO privdiff.serve.release: burned-in text check OFF" in ops
        for value in forbidden:
            assert value.decode(errors="ignore") not in log, value
            assert value.decode(errors="ignore") not in ops, value
        # the refused instance stays on site with its reason; what the archive holds is gone from here
        status = subprocess.run(
            [sys.executable, "-m", "privdiff.client.cli", "serve", "--node-dir", str(node_dir), "--status"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
        assert status.returncode == 0 and '"refused:not_chest": 1' in status.stdout, status.stdout
        assert len(list((node_dir / "spool").rglob("*.dcm"))) == 1
        assert not list((node_dir / "release" / "released").rglob("*.dcm"))
    finally:
        processes.stop_all()


@pytest.mark.slow
def test_kill_9_and_an_absent_archive_lose_nothing_and_send_nothing_twice(tiny_model, tmp_path):
    pacs = tmp_path / "pacs"
    study, other = study_uids(800), study_uids(801)
    first_half = [
        write_dicom(films_without_burned_in_text(study, sop=f"{study.sop}.{i}", seed=i), pacs / f"k{i}.dcm")
        for i in range(3)
    ]
    second_half = [
        write_dicom(films_without_burned_in_text(study, sop=f"{study.sop}.{i}", seed=i), pacs / f"k{i}.dcm")
        for i in range(3, 6)
    ]
    second_half += [
        write_dicom(
            films_without_burned_in_text(other, sop=f"{other.sop}.{i}", seed=10 + i), pacs / f"o{i}.dcm"
        )
        for i in range(2)
    ]
    node_dir, archive = tmp_path / "node", tmp_path / "archive"
    port, archive_port = free_port(), free_port()
    command = node_command(tiny_model, node_dir, port, archive_port, 3)
    processes = Processes(tmp_path / "logs")
    try:
        # 1. killed mid-study: three instances answered with success, the study not yet quiet
        node = start_node(processes, "node1", command, port)
        assert storescu(first_half, port, "PACS").returncode == 0
        kill_9(node)
        assert counts(node_dir)["pending"] == 3

        # 2. restarted: the rest of the study and another one; killed again while they are released
        node = start_node(processes, "node2", command, port)
        assert pynetdicom_store(second_half, port, "MODALITY1") == [0] * 5
        wait_for(lambda: release_running(node_dir), 300, "a release to start", every=0.02)
        release_children = children(node.pid)
        kill_9(node)
        assert release_children, "no release process was running"
        wait_for(
            lambda: not any(running(pid) for pid in release_children),
            15,  # the kernel ends it (PR_SET_PDEATHSIG); only the scheduler delays it
            "the release to die with the node",
            every=0.1,
        )
        assert counts(node_dir)["released"] < 8

        # 3. restarted with the archive still down: everything is released and kept
        node = start_node(processes, "node3", command, port)

        def released_and_kept():
            now = counts(node_dir)
            return now["released"] == 8 and now["forward_pending"] == 8 and now

        wait_for(released_and_kept, 600, "all eight instances to be released")
        # the last batch is queued for the archive before the forwarder's next try records why it failed
        wait_for(lambda: last_forward_error(node_dir), 60, "the forwarder to record a failed try")
        assert "not reachable" in last_forward_error(node_dir)
        assert counts(node_dir)["forward_pending"] == 8

        # 4. the archive comes back: each instance arrives, once
        processes.start("archive", storescp_command(archive_port, archive), ENV)
        wait_for(lambda: counts(node_dir)["forwarded"] == 8, 120, "the archive to receive everything")
        time.sleep(2)  # anything sent twice would arrive now
        stored = archived(archive)
        assert len(stored) == 8 and len({ds.SOPInstanceUID for ds in stored}) == 8
        final = counts(node_dir)
        assert (final["received"], final["released"], final["pending"], final["forward_pending"]) == (
            8,
            8,
            0,
            0,
        )
        # one verdict and one output per instance in the release's own audit trail
        db = sqlite3.connect(node_dir / "release" / "audit.sqlite")
        try:
            rows = db.execute("SELECT input_sha, output FROM records WHERE status = 'released'").fetchall()
        finally:
            db.close()
        assert len({sha for sha, _ in rows}) == 8 and len({output for _, output in rows}) == 8
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
    finally:
        processes.stop_all()
