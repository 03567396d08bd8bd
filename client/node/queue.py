"""The node's durable queue: one SQLite database (WAL, synchronous=FULL) that survives kill -9.

Tables:
- `instances`: one row per distinct instance received (keyed by the salted hash of its bytes,
  the same `input_sha` the release's audit trail uses), its study, its spool file, and its state:
  `pending` (waiting for its study to go quiet) -> `releasing` (in a release batch) ->
  `released` | `quarantined` | `refused` | `failed`, with the pipeline's reason code;
- `studies`: when each study last received an instance (wall clock, so it survives restarts);
- `forwards`: one row per released file to send to the archive: `pending` until the archive
  confirmed it, then `sent`; an output is queued at most once, so nothing is sent twice;
- `counters`: events that are not rows (duplicates, refused associations, out-of-resources).

Nothing in it names a patient: studies and instances are keyed by salted hashes, outputs by their
remapped UIDs. Every method is one transaction; one lock serialises the SCP's association
threads, the releaser and the forwarder on one connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from privdiff.client.audit import PastOutcome, utc_now
from privdiff_core.errors import PrivdiffError

QUEUE_FILE = "queue.sqlite"
FINAL_STATES = ("released", "quarantined", "refused", "failed")
COUNTERS = ("duplicates", "out_of_resources", "associations_rejected")

# WAL: the SCP's threads read while the releaser writes; synchronous=FULL: a committed row
# survives a power cut (an instance is acknowledged only once its row is committed).
_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
CREATE TABLE IF NOT EXISTS instances (
    input_sha TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    spool_file TEXT NOT NULL,
    size INTEGER NOT NULL,
    on_disk INTEGER NOT NULL DEFAULT 1,
    received TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('pending', 'releasing', 'released', 'quarantined', 'refused', 'failed')),
    batch TEXT,
    reason TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_by_state ON instances(state, study_key);
CREATE INDEX IF NOT EXISTS instances_by_batch ON instances(batch);
CREATE TABLE IF NOT EXISTS studies (
    study_key TEXT PRIMARY KEY,
    last_received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forwards (
    output TEXT PRIMARY KEY,
    input_sha TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    sent TEXT
);
CREATE INDEX IF NOT EXISTS forwards_by_state ON forwards(state);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class QueueError(PrivdiffError):
    """The node's queue database cannot be opened."""


@dataclass(frozen=True)
class QueuedInstance:
    input_sha: str
    study_key: str
    spool_file: str  # relative to the spool folder


class NodeQueue:
    def __init__(self, folder: Path):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / QUEUE_FILE
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise QueueError(f"{self.path}: not a readable queue database ({err})") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> list[int]:
        """Run statements in one transaction; the row count of each."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counts = [self._db.execute(sql, params).rowcount for sql, params in statements]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return counts

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- receiving --------------------------------------------------------------------------------

    def state_of(self, input_sha: str) -> str | None:
        rows = self._read("SELECT state FROM instances WHERE input_sha = ?", (input_sha,))
        return rows[0][0] if rows else None

    def accept(self, instance: QueuedInstance, size: int, now: float) -> bool:
        """Record a received instance whose spool file is on disk; False if it was already known."""
        inserted, _ = self._write(
            [
                (
                    "INSERT OR IGNORE INTO instances (input_sha, study_key, spool_file, size, received, "
                    "state) VALUES (?, ?, ?, ?, ?, 'pending')",
                    (instance.input_sha, instance.study_key, instance.spool_file, size, utc_now()),
                ),
                # A study stays open while instances (even repeated ones) keep arriving.
                (
                    "INSERT INTO studies (study_key, last_received) VALUES (?, ?) ON CONFLICT(study_key) "
                    "DO UPDATE SET last_received = max(last_received, excluded.last_received)",
                    (instance.study_key, now),
                ),
            ]
        )
        if not inserted:
            self.bump("duplicates")
        return bool(inserted)

    def bump(self, counter: str) -> None:
        self._write(
            [
                (
                    "INSERT INTO counters (name, value) VALUES (?, 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                    (counter,),
                )
            ]
        )

    def bytes_on_disk(self) -> int:
        return int(self._read("SELECT COALESCE(SUM(size), 0) FROM instances WHERE on_disk = 1")[0][0])

    def waiting(self) -> int:
        """Instances received and not yet through a release."""
        rows = self._read("SELECT COUNT(*) FROM instances WHERE state IN ('pending', 'releasing')")
        return int(rows[0][0])

    # -- releasing --------------------------------------------------------------------------------

    def quiet_studies(self, before: float) -> list[str]:
        """Studies with instances waiting whose last instance arrived before `before`."""
        rows = self._read(
            "SELECT DISTINCT i.study_key FROM instances i JOIN studies s USING (study_key) "
            "WHERE i.state = 'pending' AND s.last_received <= ? ORDER BY s.last_received",
            (before,),
        )
        return [row[0] for row in rows]

    def start_batch(self, batch: str, study_keys: list[str]) -> None:
        marks = ",".join("?" * len(study_keys))
        self._write(
            [
                (
                    f"UPDATE instances SET state = 'releasing', batch = ? "
                    f"WHERE state = 'pending' AND study_key IN ({marks})",
                    (batch, *study_keys),
                )
            ]
        )

    def reopen_waiting_studies(self, now: float) -> int:
        """At a (re)start: nothing could arrive while the node was down, so every study still
        waiting gets a full quiet time from now (the PACS may be retrying the rest of it)."""
        [count] = self._write(
            [
                (
                    "UPDATE studies SET last_received = ? WHERE study_key IN "
                    "(SELECT study_key FROM instances WHERE state = 'pending')",
                    (now,),
                )
            ]
        )
        return count

    def unfinished_batches(self) -> list[str]:
        """Batches a release started and did not finish (the node stopped or was killed)."""
        rows = self._read("SELECT DISTINCT batch FROM instances WHERE state = 'releasing' ORDER BY batch")
        return [row[0] for row in rows]

    def batch(self, batch: str) -> list[QueuedInstance]:
        rows = self._read(
            "SELECT input_sha, study_key, spool_file FROM instances WHERE batch = ? AND state = 'releasing'",
            (batch,),
        )
        return [QueuedInstance(*row) for row in rows]

    def finish_batch(self, batch: str, outcomes: dict[str, PastOutcome]) -> list[str]:
        """Record the release's verdict on each instance of `batch` and queue released files for the
        archive, in one transaction; the spool files of released instances, now free to delete."""
        statements: list[tuple[str, tuple]] = []
        freed = []
        for instance in self.batch(batch):
            outcome = outcomes.get(instance.input_sha)
            if outcome is None:  # the release ended without a record of it: it stays on site
                outcome = PastOutcome("failed", "", "internal_error")
            released = outcome.status == "released"
            statements.append(
                (
                    "UPDATE instances SET state = ?, reason = ?, output = ?, on_disk = ? WHERE input_sha = ?",
                    (outcome.status, outcome.reason, outcome.output, int(not released), instance.input_sha),
                )
            )
            if released:
                freed.append(instance.spool_file)
                statements.append(
                    (
                        "INSERT OR IGNORE INTO forwards (output, input_sha, state) VALUES (?, ?, 'pending')",
                        (outcome.output, instance.input_sha),
                    )
                )
        self._write(statements)
        return freed

    def spool_files(self) -> set[str]:
        """Spool files the queue still owns (received and not released)."""
        return {row[0] for row in self._read("SELECT spool_file FROM instances WHERE on_disk = 1")}

    # -- forwarding -------------------------------------------------------------------------------

    def pending_forwards(self, limit: int) -> list[str]:
        rows = self._read(
            "SELECT output FROM forwards WHERE state = 'pending' ORDER BY rowid LIMIT ?", (limit,)
        )
        return [row[0] for row in rows]

    def forwarded(self, output: str) -> None:
        self._write(
            [
                (
                    "UPDATE forwards SET state = 'sent', attempts = attempts + 1, last_error = '', sent = ? "
                    "WHERE output = ?",
                    (utc_now(), output),
                )
            ]
        )

    def forward_failed(self, outputs: list[str], error: str) -> None:
        self._write(
            [
                (
                    "UPDATE forwards SET attempts = attempts + 1, last_error = ? WHERE output = ?",
                    (error, output),
                )
                for output in outputs
            ]
        )

    # -- status -----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """received, released, quarantined, refused, failed, forwarded, pending and the counters."""
        by_state = dict(self._read("SELECT state, COUNT(*) FROM instances GROUP BY state"))
        forwards = dict(self._read("SELECT state, COUNT(*) FROM forwards GROUP BY state"))
        counters = dict(self._read("SELECT name, value FROM counters"))
        counts = {"received": sum(by_state.values())}
        counts["pending"] = by_state.get("pending", 0) + by_state.get("releasing", 0)
        counts.update({state: by_state.get(state, 0) for state in FINAL_STATES})
        counts["forwarded"] = forwards.get("sent", 0)
        counts["forward_pending"] = forwards.get("pending", 0)
        counts.update({name: counters.get(name, 0) for name in COUNTERS})
        return counts

    def last_forward_error(self) -> str:
        rows = self._read(
            "SELECT last_error FROM forwards WHERE state = 'pending' AND last_error != '' "
            "ORDER BY attempts DESC LIMIT 1"
        )
        return rows[0][0] if rows else ""

    def held(self) -> dict[str, int]:
        """Instances kept on site (refused, quarantined, failed), counted by state and reason."""
        rows = self._read(
            "SELECT state || ':' || reason, COUNT(*) FROM instances "
            "WHERE state IN ('quarantined', 'refused', 'failed') GROUP BY state, reason ORDER BY 1"
        )
        return dict(rows)
