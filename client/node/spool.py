"""The spool: received instances kept as files until their study is released, within bounds.

    SPOOL/<study key>/<input sha>.dcm     the bytes the sender sent, with their file meta

An instance is written with `privdiff.client.outputs.write_atomically` (temporary name, fsync, rename,
folder fsync) and then committed to the queue; only then does the SCP answer success. A crash
between the two leaves a file the queue does not own, which `sweep` removes at the next start
(the sender got no success for it, so it sends it again).

Bounds: the bytes the spool holds, the free space it leaves on its disk and the instances waiting
for a release. A store that would cross one is refused ("out of resources") before anything is
written, and so is one the disk refuses (ENOSPC): the sender keeps it and may retry later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from enum import Enum
from io import BytesIO
from pathlib import Path

import pydicom

from privdiff.client.deid import salted_hash
from privdiff.client.node.queue import NodeQueue, QueuedInstance
from privdiff.client.outputs import write_atomically


class Stored(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # the same bytes were already received: kept once
    FULL = "full"  # over a bound, or the disk refused it: nothing kept


@dataclass(frozen=True)
class SpoolLimits:
    max_bytes: int
    min_free_bytes: int
    max_waiting: int


def study_uid_of(raw: bytes) -> str:
    """The Study Instance UID of an encoded instance, "" when it has none or cannot be parsed."""
    try:
        ds = pydicom.dcmread(BytesIO(raw), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.get("StudyInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 -- the release judges (and records) unreadable files
        return ""


class Spool:
    def __init__(self, folder: Path, queue: NodeQueue, secret: bytes, limits: SpoolLimits):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.queue, self.secret, self.limits = queue, secret, limits
        self._lock = threading.Lock()
        self._reserved = 0  # bytes being written right now by association threads

    def path(self, spool_file: str) -> Path:
        return self.folder / spool_file

    def store(self, raw: bytes) -> Stored:
        input_sha = salted_hash(self.secret, raw, "input-content")  # the release's own key
        if self.queue.state_of(input_sha) is not None:
            # Already safe here (or already released): keep the study open, keep one copy.
            uid = study_uid_of(raw)
            self.queue.accept(self._instance(input_sha, uid), len(raw), time.time())
            return Stored.DUPLICATE
        if not self._reserve(len(raw)):
            self.queue.bump("out_of_resources")
            return Stored.FULL
        try:
            instance = self._instance(input_sha, study_uid_of(raw))
            try:
                write_atomically(self.path(instance.spool_file), raw)
            except OSError:  # ENOSPC, EDQUOT, EIO: refuse rather than accept what is not kept
                self.queue.bump("out_of_resources")
                return Stored.FULL
            new = self.queue.accept(instance, len(raw), time.time())
            return Stored.NEW if new else Stored.DUPLICATE
        finally:
            with self._lock:
                self._reserved -= len(raw)

    def _instance(self, input_sha: str, study_uid: str) -> QueuedInstance:
        # An instance without a study is a study of its own.
        study = salted_hash(self.secret, study_uid.encode(), "node-study") if study_uid else input_sha
        return QueuedInstance(input_sha, study[:16], f"{study[:16]}/{input_sha}.dcm")

    def _reserve(self, size: int) -> bool:
        with self._lock:
            limits = self.limits
            if self.queue.waiting() >= limits.max_waiting:
                return False
            if self.queue.bytes_on_disk() + self._reserved + size > limits.max_bytes:
                return False
            if shutil.disk_usage(self.folder).free - self._reserved - size < limits.min_free_bytes:
                return False
            self._reserved += size
            return True

    def remove(self, spool_files: list[str]) -> None:
        for name in spool_files:
            self.path(name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the study folder, once empty
                self.path(name).parent.rmdir()

    def sweep(self) -> int:
        """Delete files the queue does not own: leftovers of a crash. Returns how many."""
        owned = self.queue.spool_files()
        removed = 0
        for folder, _, names in os.walk(self.folder):
            for name in names:
                relative = Path(folder, name).relative_to(self.folder).as_posix()
                if relative not in owned:
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
        return removed
