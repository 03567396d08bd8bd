"""The release pipeline: readers, the anonymizer and a writer working at the same time.

    reader processes --(Prepared | Outcome)--> main thread: batches -> anonymizer -> risk check
                                                     \\--> writer thread: DICOM files + audit records

Reading, decoding and de-identifying (`privdiff.client.intake`) run in reader processes
(`privdiff.client.readers`) a window ahead of the model, so the next batch is ready when the
anonymizer finishes one;
encoding, fsync'ing and auditing run in one writer thread behind it (it also owns the SQLite
connection). Only the model's own work is on the critical path:
`benchmarks/release_throughput.py` compares the two.

Trust comes first: the model's signature is checked before the input tree is even listed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom.config
import torch

import privdiff_core
from privdiff.client.audit import FINAL_STATUSES, UNREAD, AuditTrail, Record
from privdiff.client.deid import (
    PixelProvenance,
    UIDMapper,
    create_site_secret,
    default_secret_path,
    encode_file,
    load_site_secret,
    replace_pixels,
    secret_fingerprint,
    stamp_release,
    to_stored_values,
)
from privdiff.client.intake import REASONS, InputFile, Outcome, Prepared, input_ref, walk_inputs
from privdiff.client.model_trust import ModelTrust, establish_trust, model_sha256
from privdiff.client.ocr import BurnedInTextCheck, burned_in_text_check
from privdiff.client.outputs import QUARANTINE_DIR, RELEASED_DIR, remove_stale_temporaries, write_atomically
from privdiff.client.readers import ReaderPool
from privdiff.client.residual_risk import ResidualRiskCheck, residual_risk_check
from privdiff_core.anonymizer.findings_table import FindingsTable, read_findings_table
from privdiff_core.data.dicom import DEFAULT_PIXEL_BUDGET
from privdiff_core.errors import PrivdiffError
from privdiff_core.logs import logger

SUMMARY_FILE = "release_summary.json"
SUMMARY_FORMAT = "privdiff-release-summary/1"

# Exit statuses of `privdiff-client release` (documented in its --help).
EXIT_ALL_RELEASED = 0
EXIT_SOME_REFUSED = 1  # refused or quarantined inputs, nothing failed
EXIT_NOT_STARTED = 2  # bad arguments, signature, model or audit problem: no image was touched
EXIT_SOME_FAILED = 3  # at least one input could not be read, decoded or written
EXIT_INTERRUPTED = 130


class ReleaseError(PrivdiffError):
    """The release cannot start: input/output folders, site secret, or model."""


@dataclass
class ReleaseSettings:
    model: Path
    source: Path
    out: Path
    public_key: Path | None = None
    allow_unsigned: bool = False
    site_secret: Path | None = None
    quarantine_threshold: float = 0.5
    residual_check: bool = True
    verifier: Path | None = None
    own_verifier: bool = False  # accept the anonymizer's own verifier when the site has none
    gallery: Path | None = None  # the site's own films, matched by the residual-risk check
    batch_size: int | None = None
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    # Stored pixel bytes one input image may have, checked from its header before decoding.
    pixel_budget: int = DEFAULT_PIXEL_BUDGET
    # Opt-in to pixel cleaning: release inputs whose header says text is burned in (Burned In
    # Annotation / Recognizable Visual Features YES) when the output's OCR check finds none.
    clean_burned_in: bool = False
    # OCR every output for surviving text (client/ocr.py); off: no Clean Pixel Data claim is made.
    text_check: bool = True
    # Also blank the words OCR finds in each input before anonymizing it (slower: full resolution).
    blank_input_text: bool = False
    # The films' findings from their reports (privdiff_core/anonymizer/findings_table.py): the
    # generative anonymizer draws these instead of estimating them from the film.
    findings: Path | None = None


@dataclass
class ReleaseSummary:
    run_id: str
    exit_status: int
    counts: dict[str, int]  # final state of every input found, by status
    reasons: dict[str, int]  # reason codes of the inputs not released
    processed: int  # inputs this run finished
    skipped: int  # inputs an earlier run had finished
    seconds: float
    images_per_second: float
    trust: ModelTrust
    residual_check: str
    threshold: float | None
    out: Path
    text_check: str = "off"  # "tesseract <version>" when every output was OCR-checked
    # anonymized films whose findings came from --findings ("from_table") or from the film ("estimated");
    # None: no table, every film's findings were estimated
    findings: dict[str, int] | None = None

    def as_json(self) -> dict:
        return {
            "format": SUMMARY_FORMAT,
            "run_id": self.run_id,
            "exit_status": self.exit_status,
            "inputs": sum(self.counts.values()),
            "counts": self.counts,
            "reasons": self.reasons,
            "reason_meanings": {code: REASONS[code] for code in self.reasons},
            "this_run": {"processed": self.processed, "skipped_already_done": self.skipped},
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "model_sha256": self.trust.model_sha256,
            "key_id": self.trust.key_id,
            "signed": self.trust.signed,
            "model_privacy": self.trust.privacy_budget,
            "residual_check": {"verifier": self.residual_check, "quarantine_threshold": self.threshold},
            "burned_in_text_check": self.text_check,
            "findings": self.findings or "estimated from each film",
            "released_dir": RELEASED_DIR,
            "quarantine_dir": QUARANTINE_DIR,
            "privdiff_version": privdiff_core.__version__,
        }


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _check_folders(source: Path, out: Path) -> tuple[Path, Path]:
    if not source.exists():
        # The path itself may name a patient: it is not echoed.
        raise ReleaseError("--in: no such file or folder")
    source, out = source.resolve(), out.resolve()
    # OUT inside IN is allowed (the walk skips it); IN inside OUT would mix inputs with outputs.
    if _inside(source, out):
        raise ReleaseError("--out must not be --in itself nor a folder that contains it")
    if out.exists() and not out.is_dir():
        raise ReleaseError("--out: exists and is not a folder")
    return source, out


def _site_secret(path: Path | None, log: logging.Logger) -> bytes:
    if path is not None:
        return load_site_secret(path)
    path = default_secret_path()
    if path.exists():
        return load_site_secret(path)
    secret = create_site_secret(path)
    log.info(
        f"created a new site secret at {path} (mode 0600). Keep it and back it up: it keys the new UIDs, "
        "so a rerun without it would give every image new UIDs."
    )
    return secret


class _Writer(threading.Thread):
    """Turns anonymized images into files and every outcome into one audit record."""

    def __init__(
        self,
        out: Path,
        audit: AuditTrail,
        provenance: Callable[[Prepared], PixelProvenance],
        mapper: UIDMapper,
        threshold: float | None,
        on_done: Callable[[str, str, str, str], None],
        text_check: BurnedInTextCheck | None = None,
    ):
        super().__init__(name="release-writer", daemon=True)
        self.jobs: queue.Queue = queue.Queue(maxsize=64)
        self.out, self.audit, self.provenance, self.mapper = out, audit, provenance, mapper
        self.threshold, self.on_done, self.text_check = threshold, on_done, text_check
        self.error: BaseException | None = None

    def submit(self, job) -> None:
        """Queue a job; raises instead of blocking forever if the writer has stopped."""
        while True:
            if self.error is not None or not self.is_alive():
                raise ReleaseError("the release writer stopped; rerun the release to resume")
            try:
                self.jobs.put(job, timeout=1.0)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        """Let the writer finish what is queued, then end (a no-op if it has already stopped)."""
        with contextlib.suppress(ReleaseError):
            self.submit(None)
        self.join()

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                if isinstance(job, Outcome):
                    self._record(job.source, job.input_sha, "", job.status, job.reason, None, job.detail)
                else:
                    self._write(*job)
            except BaseException as err:  # noqa: BLE001 -- the audit is gone: stop the release
                self.error = err
                return

    def _record(
        self,
        source: InputFile,
        input_sha: str,
        output: str,
        status: str,
        reason: str,
        probability: float | None,
        detail: str = "",
    ) -> None:
        self.audit.add(Record(input_sha or UNREAD, source.ref, output, status, reason, probability))
        self.on_done(source.ref, status, reason, detail)

    def _verdict(self, prepared: Prepared, image: np.ndarray, probability: float | None) -> tuple[str, bool]:
        """(reason, text check passed): reason "ok", or why the output is held back."""
        text_found = None
        if self.text_check is not None:
            unit = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
            text_found = bool(self.text_check(unit, prepared.square_side))
        if text_found:
            return "burned_in_text", False
        if probability is not None and self.threshold is not None and probability > self.threshold:
            return "residual_risk", text_found is False
        return "ok", text_found is False

    def _write(self, prepared: Prepared, image: np.ndarray, probability: float | None) -> None:
        name = prepared.output_name
        try:
            reason, text_check_passed = self._verdict(prepared, image, probability)
            quarantined = reason != "ok"
            folder, other = (QUARANTINE_DIR, RELEASED_DIR) if quarantined else (RELEASED_DIR, QUARANTINE_DIR)
            ds = prepared.header
            provenance = replace(self.provenance(prepared), text_check_passed=text_check_passed)
            replace_pixels(ds, to_stored_values(image), provenance)
            stamp_release(ds, provenance, self.mapper, prepared.input_sha)
            write_atomically(self.out / folder / name, encode_file(ds))
            # A run killed after a rename but before its record may have left this output in the
            # other folder; the verdict just reached is the one that stands.
            (self.out / other / name).unlink(missing_ok=True)
        except OSError:
            self._record(prepared.source, prepared.input_sha, "", "failed", "write_error", probability)
            return
        except Exception:  # noqa: BLE001 -- never echo an exception text: it may quote the header
            self._record(prepared.source, prepared.input_sha, "", "failed", "internal_error", probability)
            return
        status = "quarantined" if quarantined else "released"
        self._record(prepared.source, prepared.input_sha, f"{folder}/{name}", status, reason, probability)


@contextlib.contextmanager
def _quiet_dicom_libraries():
    """pydicom's warnings and log lines can quote header values (names, IDs): none may reach stderr."""
    pydicom_log = logging.getLogger("pydicom")
    was_disabled = pydicom_log.disabled
    mode = pydicom.config.settings.reading_validation_mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom_log.disabled = True
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        try:
            yield
        finally:
            pydicom_log.disabled = was_disabled
            pydicom.config.settings.reading_validation_mode = mode


@dataclass
class ReleaseContext:
    """What one release established before it reads an input: the verified model, the folders,
    the site secret, the open audit trail and the OCR check. The steps below take it whole."""

    settings: ReleaseSettings
    log: logging.Logger
    trust: ModelTrust
    source: Path
    out: Path
    secret: bytes
    fingerprint: str  # of the site secret, recorded in the audit trail
    audit: AuditTrail
    ocr: BurnedInTextCheck | None  # None: neither the text check nor the input blanking asked for it
    findings: FindingsTable | None = None  # --findings, read before any input is opened

    @property
    def text_check(self) -> BurnedInTextCheck | None:
        """The OCR check of every output (None: --no-text-check)."""
        return self.ocr if self.settings.text_check else None

    @property
    def input_blanking(self) -> BurnedInTextCheck | None:
        """The OCR that blanks words in each input first (None unless --blank-input-text)."""
        return self.ocr if self.settings.blank_input_text else None


def run_release(settings: ReleaseSettings, log: logging.Logger | None = None) -> ReleaseSummary:
    """Run one release; `log` gets the operator's lines (never a path or a header value)."""
    log = log or logger("release")
    # 1. Trust: nothing under --in is opened before the model is verified.
    trust = establish_trust(settings.model, settings.public_key, settings.allow_unsigned)
    if not trust.signed:
        log.warning(
            "UNSIGNED MODEL. --allow-unsigned was given: this release uses an anonymizer whose "
            "origin was NOT verified. The audit trail and every output header record it as UNSIGNED."
        )
    source, out = _check_folders(settings.source, settings.out)
    if settings.pixel_budget < 1:
        raise ReleaseError(f"the pixel budget must be positive, got {settings.pixel_budget} bytes")
    if settings.clean_burned_in and not settings.text_check:
        raise ReleaseError("--clean-burned-in needs the OCR text check: it decides what is released")
    findings = _findings_table(settings.findings)
    ocr = burned_in_text_check() if settings.text_check or settings.blank_input_text else None
    secret = _site_secret(settings.site_secret, log)
    fingerprint = secret_fingerprint(secret)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReleaseError(
            f"--out: cannot create the folder ({err.strerror}); nothing was released"
        ) from None
    audit = AuditTrail(out)
    try:
        audit.check_compatible(trust.model_sha256, fingerprint)
        return _run(
            ReleaseContext(settings, log, trust, source, out, secret, fingerprint, audit, ocr, findings)
        )
    finally:
        audit.close()


def _findings_table(path: Path | None) -> FindingsTable | None:
    if path is None:
        return None
    try:
        return read_findings_table(path)
    except PrivdiffError as err:  # names the site's own file and line: no patient data
        raise ReleaseError(f"--findings: {err}; nothing was released") from None


def _run(ctx: ReleaseContext) -> ReleaseSummary:
    removed = remove_stale_temporaries(ctx.out)
    if removed:
        ctx.log.info(f"removed {removed} temporary file(s) left by an interrupted run")
    if ctx.source.is_dir():
        inputs = walk_inputs(ctx.source, ctx.secret, exclude=ctx.out)
    else:
        inputs = [InputFile(ctx.source, input_ref(ctx.secret, ctx.source.name))]
    if not inputs:
        raise ReleaseError("--in holds no files")
    memory = _Memory.of(ctx.audit, ctx.out)
    image_size = _model_image_size(ctx.trust.folder)
    # The readers start (fork) before the model is loaded and before any thread runs.
    readers = ReaderPool(
        ctx.settings.workers,
        image_size,
        ctx.secret,
        memory.done,
        ctx.settings.pixel_budget,
        ctx.settings.clean_burned_in,
        ctx.input_blanking,
    )
    try:
        return _run_with_readers(ctx, inputs, memory, readers)
    finally:
        readers.close()


def _model_image_size(folder: Path) -> int:
    """The anonymizer's image size, read from its manifest without loading it."""
    from privdiff_core.anonymizer import find_model_folder
    from privdiff_core.model.folder import MANIFEST_FILE

    try:
        manifest = json.loads((find_model_folder(folder) / MANIFEST_FILE).read_text())
        return int(manifest.get("image_size") or manifest["config"]["image_size"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReleaseError(f"{folder}: no readable manifest with the model's image size ({err})") from err


@dataclass
class _Memory:
    """What earlier runs into this folder finished, and which output names they own."""

    past: dict
    done: set[tuple[str, str]]  # (input_sha, input_ref)
    owners: dict[str, str]

    @classmethod
    def of(cls, audit: AuditTrail, out: Path) -> _Memory:
        past = audit.past_outcomes()
        # An input whose latest record is final is not read again, unless its output has vanished.
        done = {
            key
            for key, outcome in past.items()
            if outcome.status in FINAL_STATUSES and (not outcome.output or (out / outcome.output).is_file())
        }
        owners = {output.split("/", 1)[1]: sha for output, sha in audit.output_owners().items()}
        return cls(past, done, owners)


def _run_with_readers(
    ctx: ReleaseContext, inputs: list[InputFile], memory: _Memory, readers: ReaderPool
) -> ReleaseSummary:
    from privdiff_core.anonymizer import Anonymizer

    settings, trust, out = ctx.settings, ctx.trust, ctx.out
    anonymizer = Anonymizer.load(trust.folder, device=settings.device)
    if model_sha256(trust.folder) != trust.model_sha256:
        raise ReleaseError(f"{trust.folder} changed while it was being loaded; run the release again")
    if anonymizer.image_size != readers.image_size:
        raise ReleaseError(f"{trust.folder}: its manifest and its model disagree on the image size")
    risk: ResidualRiskCheck | None = None
    if settings.residual_check:
        risk = residual_risk_check(anonymizer, settings.verifier, settings.gallery, settings.own_verifier)
    else:
        ctx.log.info(
            "residual-risk check OFF (--no-residual-check): outputs are released without being scored"
        )
    threshold = settings.quarantine_threshold if risk else None
    run_id = uuid.uuid4().hex[:16]
    ctx.audit.start_run(
        run_id,
        trust.model_sha256,
        trust.key_id,
        trust.signed,
        ctx.fingerprint,
        privdiff_core.__version__,
        risk.source if risk else "off",
        threshold,
        trust.privacy_budget,
    )
    text_check = ctx.text_check
    if text_check is None:
        ctx.log.info(
            "burned-in text check OFF (--no-text-check): outputs claim neither Clean Pixel Data nor no text"
        )
    run = _ReleaseRun(ctx, anonymizer, risk, memory, readers, len(inputs))
    started = time.perf_counter()
    interrupted = False
    with _quiet_dicom_libraries():
        run.writer.start()
        try:
            run.pump(inputs)
        except KeyboardInterrupt:
            interrupted = True
        except ReleaseError:
            if run.writer.error is None:
                raise
            # else the writer stopped (disk full): reported below, with what was done before
        finally:
            run.writer.stop()
            run.bar.close()
    counts = {status: 0 for status in ("released", "refused", "failed", "quarantined")}
    for status in run.final_status.values():
        counts[status] += 1
    if run.writer.error is not None:
        raise _stopped(run.writer.error, counts, out)
    seconds = time.perf_counter() - started
    if interrupted:
        exit_status = EXIT_INTERRUPTED
    elif counts["failed"]:
        exit_status = EXIT_SOME_FAILED
    elif counts["refused"] or counts["quarantined"]:
        exit_status = EXIT_SOME_REFUSED
    else:
        exit_status = EXIT_ALL_RELEASED
    try:
        ctx.audit.finish_run(exit_status)
    except sqlite3.Error as err:
        raise _stopped(err, counts, out) from None
    if interrupted:
        raise KeyboardInterrupt
    return ReleaseSummary(
        run_id,
        exit_status,
        counts,
        dict(sorted(run.reasons.items())),
        run.counters["processed"],
        run.counters["skipped"],
        seconds,
        run.counters["anonymized"] / seconds if seconds > 0 else 0.0,
        trust,
        risk.source if risk else "off",
        threshold,
        out,
        text_check.describe() if text_check else "off",
        None
        if ctx.findings is None
        else {
            "from_table": run.counters["findings_given"],
            "estimated": run.counters["anonymized"] - run.counters["findings_given"],
        },
    )


def _stopped(error: BaseException, counts: dict[str, int], out: Path) -> ReleaseError:
    """The release stopped midway (disk full, audit unwritable): say what it had already done."""
    folder = out / RELEASED_DIR
    on_disk = sum(1 for _ in folder.rglob("*.dcm")) if folder.is_dir() else 0
    done = ", ".join(f"{number} {status}" for status, number in counts.items())
    return ReleaseError(
        f"the release stopped: the audit trail could not be written ({type(error).__name__}: "
        f"{_os_reason(error)}). Before that, inputs recorded: {done}; {on_disk} file(s) are in "
        f"OUT/{RELEASED_DIR}. Free space or fix the folder, then rerun to resume"
    )


def _os_reason(error: BaseException) -> str:
    # OSError/sqlite3 texts name no patient (paths are never part of them here); others are not kept.
    return (
        str(getattr(error, "strerror", None) or error) if isinstance(error, OSError | sqlite3.Error) else "-"
    )


@dataclass
class _Claims:
    """Which input owns which output name: earlier runs' records, then this run in input order."""

    past: dict[str, str]
    now: dict[str, str]


def _claim_output_name(prepared: Prepared, claims: _Claims, mapper: UIDMapper) -> bool:
    """Give `prepared` an output name no other input owns; False for a second copy of one file.

    Two different files can carry one SOP Instance UID (re-exports, a MONOCHROME1 copy): the later
    one, in input order, gets a new instance UID keyed by its content, so neither overwrites the
    other and a rerun names both the same way.
    """
    name = prepared.output_name
    if claims.now.get(name) == prepared.input_sha:
        return False
    owner = claims.now.get(name) or claims.past.get(name)
    if owner is not None and owner != prepared.input_sha:
        header = prepared.header
        header.SOPInstanceUID = mapper.derived(header.SOPInstanceUID, prepared.input_sha)
        prepared.output_name = (
            f"{header.StudyInstanceUID}/{header.SeriesInstanceUID}/{header.SOPInstanceUID}.dcm"
        )
    claims.now[prepared.output_name] = prepared.input_sha
    return True


class _ReleaseRun:
    """One run's moving parts: readers ahead, the model on the calling thread, the writer behind."""

    def __init__(
        self,
        ctx: ReleaseContext,
        anonymizer,
        risk: ResidualRiskCheck | None,
        memory: _Memory,
        readers: ReaderPool,
        total: int,
    ):
        from tqdm.auto import tqdm

        settings = ctx.settings
        self.settings, self.trust, self.anonymizer, self.risk = settings, ctx.trust, anonymizer, risk
        self.batch_size = int(settings.batch_size or anonymizer.cfg.anonymize.batch_size)
        self.mapper = UIDMapper(ctx.secret)
        self.past = memory.past
        self.claims = _Claims(dict(memory.owners), {})
        self.readers = readers
        threshold = settings.quarantine_threshold if risk else None
        self.writer = _Writer(
            ctx.out, ctx.audit, self._provenance, self.mapper, threshold, self._on_done, ctx.text_check
        )
        self.final_status: dict[str, str] = {}  # input ref -> status (this run's, or the earlier one)
        self.reasons: Counter = Counter()
        self.counters: Counter = Counter()
        self.bar = tqdm(
            total=total, unit="img", desc="release", disable=not settings.progress, dynamic_ncols=True
        )
        self._lock = threading.Lock()
        self._batch: list[Prepared] = []
        self.findings = ctx.findings
        # the folder the table's `file` paths are relative to (--in, or the folder of a single file)
        self.source_root = ctx.source if ctx.source.is_dir() else ctx.source.parent

    def _provenance(self, prepared: Prepared) -> PixelProvenance:
        return PixelProvenance(
            self.trust.model_sha256,
            self.trust.key_id if self.trust.signed else None,
            self.anonymizer.image_size,
            prepared.square_side,
        )

    def _on_done(self, ref: str, status: str, reason: str, detail: str) -> None:
        """Called by the writer once an input's record is committed."""
        with self._lock:
            self.final_status[ref] = status
            self.counters["processed"] += 1
            if status != "released":
                self.reasons[reason] += 1
            self.bar.update(1)
        if status != "released":
            extra = f" [{detail}]" if detail else ""
            self.bar.write(f"input {ref}: {status} ({reason}{extra}): {REASONS[reason]}")

    def pump(self, inputs: list[InputFile]) -> None:
        """Keep the readers a window ahead, in input order; anonymize full batches as they fill."""
        window = max(2 * self.batch_size, 4 * self.settings.workers)
        pending: deque[tuple[InputFile, Future]] = deque()
        try:
            for source in inputs:
                pending.append((source, self.readers.submit(source)))
                while len(pending) >= window:
                    self._handle(self.readers.result(*pending.popleft()))
            while pending:
                self._handle(self.readers.result(*pending.popleft()))
            if self._batch:
                self._anonymize_batch()
        except BaseException:
            for _, future in pending:
                future.cancel()
            raise

    def _handle(self, result: Prepared | Outcome) -> None:
        if isinstance(result, Outcome):
            if result.status == "skipped":
                previous = self.past[(result.input_sha or UNREAD, result.source.ref)]
                self.final_status[result.source.ref] = previous.status
                if previous.status != "released":
                    self.reasons[previous.reason] += 1
                self.counters["skipped"] += 1
                self.bar.update(1)
            else:
                self.writer.submit(result)
            return
        if not _claim_output_name(result, self.claims, self.mapper):
            self.writer.submit(Outcome(result.source, result.input_sha, "refused", "duplicate_input"))
            return
        self._batch.append(result)
        if len(self._batch) >= self.batch_size:
            self._anonymize_batch()

    def _conditions(self, batch: list[Prepared]):
        """The batch's findings from the site's table, by SOP Instance UID or path; None without one."""
        if self.findings is None:
            return None
        entries = [
            self.findings.lookup(p.source_uid, p.source.path.relative_to(self.source_root).as_posix())
            for p in batch
        ]
        self.counters["findings_given"] += sum(entry is not None for entry in entries)
        return self.findings.conditions(entries)

    def _anonymize_batch(self) -> None:
        from privdiff_core.anonymizer import seed_for

        batch, self._batch = self._batch, []
        images = torch.from_numpy(np.stack([p.image for p in batch])).unsqueeze(1)
        # One noise seed per image, from its output name: its pixels do not depend on its batch.
        seeds = [seed_for(self.settings.seed, p.output_name) for p in batch]
        anonymized = self.anonymizer.anonymize(
            images, conditions=self._conditions(batch), seed=seeds, batch_size=len(batch)
        )
        if self.risk is not None:
            probabilities = [float(p) for p in self.risk.same_patient_probability(images, anonymized)]
        else:
            probabilities = [None] * len(batch)
        for prepared, image, probability in zip(
            batch, anonymized.squeeze(1).float().cpu().numpy(), probabilities, strict=True
        ):
            self.writer.submit((prepared, image, probability))
        self.counters["anonymized"] += len(batch)
