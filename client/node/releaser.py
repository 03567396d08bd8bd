"""Quiet studies through exactly the folder release, one batch at a time.

A study is released when no instance of it has arrived for the quiet time. Every study quiet at
that moment goes into one batch (the model is loaded once per batch, not per study):

1. the queue marks the batch's instances `releasing` (committed first: a restart finds the batch);
2. their spool files are hard-linked into BATCHES/<batch>/<study key>/ (no copy, no PHI in names);
3. the release process runs `privdiff.client.release_pipeline.run_release` on that folder into the node's one
   release folder: signature check, de-identification, anonymization, residual-risk check,
   quarantine and audit trail, the same code and the same audit as `privdiff-client release`;
4. each instance's verdict is read back from that audit trail by its content hash, recorded in the
   queue with its released file queued for the archive (one transaction), then the released
   instances' spool files and the batch folder are deleted.

A node killed anywhere in 1-4 finds the batch still `releasing` when it restarts and runs it again:
the release resumes from its audit trail (what it finished is skipped, not redone), so every
instance gets one verdict and one output. The release process is spawned (not forked) because the
release forks reader processes, which must not inherit the SCP's threads; it is started once and
kept (its imports take seconds), and the kernel ends it when the node dies, kill -9 included.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from privdiff.client.audit import AuditTrail
from privdiff.client.node.queue import NodeQueue
from privdiff.client.node.release_worker import release_worker
from privdiff.client.node.spool import Spool
from privdiff.client.release_pipeline import (
    EXIT_ALL_RELEASED,
    EXIT_SOME_FAILED,
    EXIT_SOME_REFUSED,
    ReleaseSettings,
)
from privdiff_core.logs import current_log_setup

RELEASE_DIR = "release"  # the release's output folder: released/, quarantine/, audit.sqlite
BATCHES_DIR = "batches"
_COMPLETED = (EXIT_ALL_RELEASED, EXIT_SOME_REFUSED, EXIT_SOME_FAILED)  # the release ran to its end
_RETRY_SECONDS = 30.0


class _Worker:
    """A release process started (spawned) by the releaser's thread, kept across batches: the
    imports (torch, diffusers: seconds) are paid once per node, not once per batch."""

    def __init__(self, lock_path: Path, threads: int | None):
        context = multiprocessing.get_context("spawn")
        self._jobs, theirs = context.Pipe()
        self.process = context.Process(
            target=release_worker,
            args=(theirs, lock_path, os.getpid(), threads, current_log_setup()),
            name="privdiff-release",
        )
        self.process.start()
        theirs.close()
        self._busy = False

    def release(self, settings: ReleaseSettings) -> int | None:
        """The release's exit status; None if the process died (it is then replaced)."""
        self._busy = True
        try:
            self._jobs.send(settings)
            return self._jobs.recv()
        except (EOFError, OSError):
            return None
        finally:
            self._busy = False

    def stop(self) -> None:
        """End the process: an idle one by closing its pipe (it exits cleanly), a busy one by
        SIGTERM (the batch resumes from the audit trail at the next start; the waiting thread
        gets None)."""
        if not self._busy:
            self._jobs.close()
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=30)
        self._jobs.close()


class Releaser:
    def __init__(
        self,
        node_dir: Path,
        queue: NodeQueue,
        spool: Spool,
        settings: ReleaseSettings,
        quiet_seconds: float,
        threads: int | None,
        say: Callable[[str], None],
    ):
        self.release_dir = node_dir / RELEASE_DIR
        self.batches_dir = node_dir / BATCHES_DIR
        self.lock_path = node_dir / "release.lock"
        self.queue, self.spool, self.settings = queue, spool, settings
        self.quiet_seconds, self.threads, self.say = quiet_seconds, threads, say
        self._retry_at = 0.0
        self._worker: _Worker | None = None
        self._stopping = False

    def sweep(self) -> int:
        """Delete batch folders of batches already finished (a node killed before removing them):
        they hold links to received instances, which must not outlive their release."""
        unfinished = set(self.queue.unfinished_batches())
        removed = 0
        if self.batches_dir.is_dir():
            for folder in self.batches_dir.iterdir():
                if folder.name not in unfinished:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        return removed

    def stop(self) -> None:
        """End a release in progress (its batch resumes at the next start) and start no other."""
        self._stopping = True
        worker = self._worker
        if worker is not None:
            worker.stop()

    def step(self) -> bool:
        """Release what is due: unfinished batches first, then the studies now quiet. True if it
        released something."""
        if self._stopping or time.monotonic() < self._retry_at:
            return False
        if self._worker is None:  # started before the first study is due: its imports take seconds
            self._worker = _Worker(self.lock_path, self.threads)
        batches = self.queue.unfinished_batches()
        if not batches:
            studies = self.queue.quiet_studies(time.time() - self.quiet_seconds)
            if not studies:
                return False
            batch = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts by start time
            self.queue.start_batch(batch, studies)
            batches = [batch]
        for batch in batches:
            if self._stopping:
                return False
            if not self._release(batch):
                self._retry_at = time.monotonic() + _RETRY_SECONDS
                self.say(f"batch {batch}: the release did not complete; retrying in {_RETRY_SECONDS:.0f} s")
                return False
        return True

    def _release(self, batch: str) -> bool:
        instances = self.queue.batch(batch)
        folder = self.batches_dir / batch
        for instance in instances:
            link = folder / instance.spool_file
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.link(self.spool.path(instance.spool_file), link)
        if instances:
            settings = replace(self.settings, source=folder, out=self.release_dir, progress=False)
            status = self._worker.release(settings)
            if status is None:
                self._worker.stop()
                self._worker = None
            if status not in _COMPLETED:
                return False
            audit = AuditTrail(self.release_dir)
            try:
                # The audit keys a verdict by (content, path); the node keeps one copy of an
                # instance's content, so its content hash names it.
                outcomes = {sha: outcome for (sha, _ref), outcome in audit.past_outcomes().items()}
            finally:
                audit.close()
            freed = self.queue.finish_batch(batch, outcomes)
            self.spool.remove(freed)
            counts = {}
            for instance in instances:
                state = outcomes[instance.input_sha].status if instance.input_sha in outcomes else "failed"
                counts[state] = counts.get(state, 0) + 1
            summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            self.say(f"batch {batch}: {len(instances)} instance(s) of the quiet studies: {summary}")
        shutil.rmtree(folder, ignore_errors=True)
        return True
