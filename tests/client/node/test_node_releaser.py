"""The releaser's housekeeping: batch folders (links to received instances) never outlive their batch."""

from __future__ import annotations

import time
from pathlib import Path

from phi_dicom import phi_dataset, study_uids, write_dicom

from privdiff.client.node.queue import NodeQueue
from privdiff.client.node.releaser import Releaser
from privdiff.client.node.spool import Spool, SpoolLimits
from privdiff.client.release_pipeline import ReleaseSettings


def test_sweep_keeps_the_unfinished_batch_and_removes_finished_ones(tmp_path):
    queue = NodeQueue(tmp_path)
    spool = Spool(tmp_path / "spool", queue, b"releaser test secret 0123456789", SpoolLimits(10**9, 0, 10))
    spool.store(write_dicom(phi_dataset(study_uids(1)), tmp_path / "in.dcm").read_bytes())
    queue.start_batch("unfinished", queue.quiet_studies(time.time() + 1))
    settings = ReleaseSettings(model=Path("model"), source=tmp_path, out=tmp_path / "release")
    releaser = Releaser(tmp_path, queue, spool, settings, 1.0, None, print)
    for batch in ("unfinished", "finished-before-a-kill"):
        (tmp_path / "batches" / batch / "study").mkdir(parents=True)
        (tmp_path / "batches" / batch / "study" / "instance.dcm").write_bytes(b"a link to PHI")
    try:
        assert releaser.sweep() == 1
        assert [p.name for p in (tmp_path / "batches").iterdir()] == ["unfinished"]
    finally:
        queue.close()
