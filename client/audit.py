"""The release's audit trail: one SQLite record per input, committed one transaction at a time.

`OUT/audit.sqlite` holds two tables:

- `runs`: one row per `privdiff-client release` run into this folder: the model's SHA-256 and
  signature key id (or `UNSIGNED`), the privacy budget its signed metadata states (DP epsilon at
  delta), the site secret's fingerprint, privdiff's version, the residual-risk settings,
  start/end time and exit status;
- `records`: one row per input a run finished with: the salted hash of the input's content
  (`input_sha`) and of its relative path (`input_ref`), the output path relative to OUT (empty
  unless released or quarantined), the model hash and key id, `status` (released, refused,
  failed, quarantined), a `reason` code (see `privdiff.client.intake.REASONS`), the residual-risk score,
  and a UTC timestamp.

Nothing in it identifies a patient: inputs are named only by keyed hashes (`privdiff.client.deid.uids`),
outputs by remapped UIDs. It is also the release's memory: a rerun skips every input (content and
path) whose latest record is final (released, refused, quarantined), so a killed release resumes
where it stopped and a rerun reports the same counts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from privdiff_core.errors import PrivdiffError

AUDIT_FILE = "audit.sqlite"
STATUSES = ("released", "refused", "failed", "quarantined")
FINAL_STATUSES = ("released", "refused", "quarantined")  # a failed input is retried by a rerun
# input_sha of an input refused before its content was read (a link, a FIFO, an unreadable file).
UNREAD = "unread"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    exit_status INTEGER,
    model_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signed INTEGER NOT NULL,
    secret_fingerprint TEXT NOT NULL,
    privdiff_version TEXT NOT NULL,
    residual_check TEXT NOT NULL,
    quarantine_threshold REAL,
    model_privacy TEXT
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    input_sha TEXT NOT NULL,
    input_ref TEXT NOT NULL,
    output TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('released', 'refused', 'failed', 'quarantined')),
    reason TEXT NOT NULL,
    same_patient_probability REAL,
    model_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_input ON records(input_sha);
CREATE INDEX IF NOT EXISTS records_by_output ON records(output);
"""


class AuditError(PrivdiffError):
    """The output folder's audit trail belongs to another model or site secret, or is unreadable."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Record:
    input_sha: str
    input_ref: str
    output: str
    status: str
    reason: str
    same_patient_probability: float | None = None


@dataclass(frozen=True)
class PastOutcome:
    """The latest record of an input from earlier runs."""

    status: str
    output: str
    reason: str


class AuditTrail:
    """Owns the SQLite connection: use it from one thread only (the release's writer thread)."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / AUDIT_FILE
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed record survives a power cut
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            if "model_privacy" not in columns:  # a folder released into before the column existed
                self._db.execute("ALTER TABLE runs ADD COLUMN model_privacy TEXT")
        except sqlite3.DatabaseError as err:
            raise AuditError(f"{self.path}: not a readable audit database ({err})") from err
        self.run_id: str | None = None
        self._model_sha = self._key_id = ""

    # -- runs ------------------------------------------------------------------------------------

    def check_compatible(self, model_sha256: str, secret_fingerprint: str) -> None:
        """Refuse to mix models or site secrets in one release folder (outputs would not match)."""
        rows = self._db.execute("SELECT DISTINCT model_sha256, secret_fingerprint FROM runs").fetchall()
        for model, fingerprint in rows:
            if model != model_sha256:
                raise AuditError(
                    f"{self.path.parent} was released with another anonymizer (model {model[:16]}...); "
                    "use a new --out folder for this model"
                )
            if fingerprint != secret_fingerprint:
                raise AuditError(
                    f"{self.path.parent} was released with another site secret (fingerprint {fingerprint}); "
                    "rerun with that --site-secret, or use a new --out folder"
                )

    def start_run(
        self,
        run_id: str,
        model_sha256: str,
        key_id: str,
        signed: bool,
        secret_fingerprint: str,
        version: str,
        residual_check: str,
        quarantine_threshold: float | None,
        model_privacy: str = "",
    ) -> None:
        self.run_id, self._model_sha, self._key_id = run_id, model_sha256, key_id
        with self._transaction():
            self._db.execute(
                "INSERT INTO runs (run_id, started, model_sha256, key_id, signed, secret_fingerprint, "
                "privdiff_version, residual_check, quarantine_threshold, model_privacy) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    utc_now(),
                    model_sha256,
                    key_id,
                    int(signed),
                    secret_fingerprint,
                    version,
                    residual_check,
                    quarantine_threshold,
                    model_privacy,
                ),
            )

    def finish_run(self, exit_status: int) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET finished = ?, exit_status = ? WHERE run_id = ?",
                (utc_now(), exit_status, self.run_id),
            )

    # -- records ---------------------------------------------------------------------------------

    def add(self, record: Record) -> None:
        """Commit one record (its own transaction: a kill loses at most the record being written)."""
        if record.status not in STATUSES:
            raise ValueError(f"unknown status {record.status!r}")
        with self._transaction():
            self._db.execute(
                "INSERT INTO records (run_id, input_sha, input_ref, output, status, reason, "
                "same_patient_probability, model_sha256, key_id, timestamp) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    self.run_id,
                    record.input_sha,
                    record.input_ref,
                    record.output,
                    record.status,
                    record.reason,
                    record.same_patient_probability,
                    self._model_sha,
                    self._key_id,
                    utc_now(),
                ),
            )

    def past_outcomes(self) -> dict[tuple[str, str], PastOutcome]:
        """(input_sha, input_ref) -> its latest record, over all earlier runs.

        Keyed by content *and* path: two copies of one file in --in are two inputs (one released,
        one refused as a duplicate), and a rerun must find each one's own verdict again."""
        rows = self._db.execute(
            "SELECT input_sha, input_ref, status, output, reason FROM records WHERE id IN "
            "(SELECT MAX(id) FROM records GROUP BY input_sha, input_ref)"
        ).fetchall()
        return {(sha, ref): PastOutcome(status, output, reason) for sha, ref, status, output, reason in rows}

    def output_owners(self) -> dict[str, str]:
        """output path -> input_sha, for every output an earlier record released or quarantined."""
        rows = self._db.execute(
            "SELECT output, input_sha FROM records WHERE status IN ('released', 'quarantined') ORDER BY id"
        ).fetchall()
        return dict(rows)

    def latest_records(self) -> list[tuple[str, str, str, str]]:
        """(input_ref, output, status, reason) of every input's latest record, oldest first."""
        return self._db.execute(
            "SELECT input_ref, output, status, reason FROM records WHERE id IN "
            "(SELECT MAX(id) FROM records GROUP BY input_ref) ORDER BY id"
        ).fetchall()

    def latest_counts(self) -> dict[str, int]:
        """Inputs per status, each input counted once by its latest record."""
        rows = self._db.execute(
            "SELECT status, COUNT(*) FROM records WHERE id IN "
            "(SELECT MAX(id) FROM records GROUP BY input_sha) GROUP BY status"
        ).fetchall()
        return {status: 0 for status in STATUSES} | dict(rows)

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
