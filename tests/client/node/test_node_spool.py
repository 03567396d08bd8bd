"""The node's spool and durable queue: what is kept, for how long, within which bounds."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from phi_dicom import copy_real, phi_dataset, study_uids, write_dicom

from privdiff.client.audit import PastOutcome
from privdiff.client.node import spool as spool_module
from privdiff.client.node.queue import NodeQueue
from privdiff.client.node.spool import Spool, SpoolLimits, Stored

SECRET = b"node spool test secret 012345678"
ROOMY = SpoolLimits(max_bytes=10**9, min_free_bytes=0, max_waiting=1000)


def encoded(tmp_path: Path, tag: int, seed: int = 0, sop: str | None = None) -> bytes:
    path = write_dicom(phi_dataset(study_uids(tag), sop=sop, seed=seed), tmp_path / f"in_{tag}_{seed}.dcm")
    return path.read_bytes()


@pytest.fixture
def node(tmp_path):
    queue = NodeQueue(tmp_path)
    yield queue, Spool(tmp_path / "spool", queue, SECRET, ROOMY)
    queue.close()


def spooled(spool: Spool) -> list[Path]:
    return sorted(p for p in spool.folder.rglob("*") if p.is_file())


def test_an_instance_is_kept_byte_for_byte_once_and_its_study_stays_open(node, tmp_path):
    queue, spool = node
    raw = (copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "real")).read_bytes()
    assert spool.store(raw) is Stored.NEW
    [kept] = spooled(spool)
    assert kept.read_bytes() == raw  # JPEG bytes as sent: decoding is the release's job
    assert spool.store(raw) is Stored.DUPLICATE
    assert spooled(spool) == [kept]
    counts = queue.counts()
    assert (counts["received"], counts["pending"], counts["duplicates"]) == (1, 1, 1)
    # no UID or name of the patient in the spool's paths: salted hashes only
    assert "1.2." not in kept.relative_to(spool.folder).as_posix()


def test_a_study_is_due_only_after_its_quiet_time(node, tmp_path):
    queue, spool = node
    first = encoded(tmp_path, 1)
    spool.store(first)
    started = time.time()
    assert queue.quiet_studies(started - 60) == []  # it arrived less than 60 s ago
    [study] = queue.quiet_studies(time.time() + 1)
    time.sleep(0.05)
    spool.store(encoded(tmp_path, 1, seed=1, sop=study_uids(1).sop + ".2"))  # same study, later
    assert queue.quiet_studies(started + 0.01) == []  # the new instance re-opened it
    assert queue.quiet_studies(time.time() + 1) == [study]


def test_a_batch_records_each_verdict_and_queues_each_released_file_once(node, tmp_path):
    queue, spool = node
    for tag in (1, 2):
        spool.store(encoded(tmp_path, tag))
    studies = queue.quiet_studies(time.time() + 1)
    queue.start_batch("b1", studies)
    assert queue.unfinished_batches() == ["b1"] and queue.counts()["pending"] == 2
    released, refused = queue.batch("b1")
    outcomes = {
        released.input_sha: PastOutcome("released", "released/s/e/i.dcm", "ok"),
        refused.input_sha: PastOutcome("refused", "", "not_chest"),
    }
    freed = queue.finish_batch("b1", outcomes)
    assert freed == [released.spool_file]  # the refused instance stays on site
    spool.remove(freed)
    assert [p.name for p in spooled(spool)] == [Path(refused.spool_file).name]
    assert queue.unfinished_batches() == [] and queue.pending_forwards(10) == ["released/s/e/i.dcm"]
    assert queue.held() == {"refused:not_chest": 1}
    counts = queue.counts()
    assert (counts["released"], counts["refused"], counts["pending"], counts["forward_pending"]) == (
        1,
        1,
        0,
        1,
    )
    queue.forwarded("released/s/e/i.dcm")
    assert queue.pending_forwards(10) == [] and queue.counts()["forwarded"] == 1
    # the same bytes sent again after their release: acknowledged, not released or sent again
    spool.store(Path(tmp_path / "in_1_0.dcm").read_bytes())
    assert queue.counts()["received"] == 2 and queue.quiet_studies(time.time() + 1) == []


def test_the_queue_survives_reopening(tmp_path):
    queue = NodeQueue(tmp_path)
    Spool(tmp_path / "spool", queue, SECRET, ROOMY).store(encoded(tmp_path, 3))
    queue.close()
    again = NodeQueue(tmp_path)
    try:
        assert again.counts()["pending"] == 1 and len(again.spool_files()) == 1
    finally:
        again.close()


def test_bounds_answer_full_before_anything_is_written(tmp_path):
    queue = NodeQueue(tmp_path)
    one, two = encoded(tmp_path, 1), encoded(tmp_path, 2)
    try:
        spool = Spool(tmp_path / "spool", queue, SECRET, SpoolLimits(len(one) + len(two) // 2, 0, 1000))
        assert spool.store(one) is Stored.NEW
        assert spool.store(two) is Stored.FULL  # over --max-spool-mb
        assert len(spooled(spool)) == 1
        spool.limits = SpoolLimits(10**9, 0, 1)
        assert spool.store(two) is Stored.FULL  # over --max-waiting
        spool.limits = SpoolLimits(10**9, 2**62, 1000)
        assert spool.store(two) is Stored.FULL  # would leave less than --min-free-mb on the disk
        assert len(spooled(spool)) == 1
        assert queue.counts()["received"] == 1 and queue.counts()["out_of_resources"] == 3
    finally:
        queue.close()


def test_a_disk_that_refuses_the_write_gives_full_not_a_lost_instance(node, tmp_path, monkeypatch):
    queue, spool = node

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module, "write_atomically", disk_full)
    assert spool.store(encoded(tmp_path, 4)) is Stored.FULL
    assert queue.counts()["received"] == 0 and spooled(spool) == []


def test_sweep_removes_only_what_the_queue_does_not_own(node, tmp_path):
    queue, spool = node
    spool.store(encoded(tmp_path, 5))
    [kept] = spooled(spool)
    orphan = spool.folder / "0123456789abcdef" / "not-committed.dcm"  # a crash before the commit
    orphan.parent.mkdir()
    orphan.write_bytes(b"x")
    assert spool.sweep() == 1
    assert spooled(spool) == [kept]


def test_a_restart_gives_waiting_studies_a_full_quiet_time(node, tmp_path):
    """While the node was down nothing could arrive: the PACS may still hold the rest of a study."""
    queue, spool = node
    spool.store(encoded(tmp_path, 6))
    restarted = time.time() + 100
    assert queue.quiet_studies(restarted) != []
    assert queue.reopen_waiting_studies(restarted) == 1
    assert queue.quiet_studies(restarted - 1) == [] and queue.quiet_studies(restarted) != []
