"""Reader processes: read, decode, check and de-identify inputs beside the model, not in its way.

Processes, not threads: pydicom's JPEG decoders (pylibjpeg) hold the GIL for a whole decode
(~0.1-0.2 s for a 1024x1024 radiograph), which would stall the thread that drives the model and
cap reading at one core. Each process also gets its own `warnings` state (pydicom's reader uses
`warnings.catch_warnings`, which threads would share).

On Linux the pool forks before the model is loaded (cheap, nothing to re-import); elsewhere it
spawns. A decoder that crashes its process (a malformed file can do that to C code) breaks the
pool: the pool is rebuilt and each input whose result was lost is retried alone in a fresh
process, so only the input that crashes it is recorded as failed (`reader_crash`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pydicom.config

from privdiff.client.deid import Deidentifier, UIDMapper
from privdiff.client.intake import InputFile, Intake, Outcome, Prepared
from privdiff.client.ocr import BurnedInTextCheck
from privdiff_core.data.dicom import DEFAULT_PIXEL_BUDGET

_INTAKE: Intake | None = None


def silence_dicom_libraries() -> None:
    """pydicom's warnings and log lines can quote header values (names, IDs): none may be printed."""
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").disabled = True
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def _exit_with_parent(parent: int) -> None:
    """A release killed with -9 cannot stop its readers: they notice they were orphaned and go."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start_worker(
    parent: int,
    image_size: int,
    secret: bytes,
    done: frozenset[tuple[str, str]],
    pixel_budget: int,
    clean_burned_in: bool,
    blank_text: BurnedInTextCheck | None,
) -> None:
    global _INTAKE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    silence_dicom_libraries()
    deidentifier = Deidentifier(UIDMapper(secret))
    _INTAKE = Intake(image_size, secret, deidentifier, set(done), pixel_budget, clean_burned_in, blank_text)


def _read(source: InputFile) -> Prepared | Outcome:
    return _INTAKE(source)


def _ready() -> bool:
    return _INTAKE is not None


class ReaderPool:
    """`workers` processes running `Intake` on input files; results come back in submission order."""

    def __init__(
        self,
        workers: int,
        image_size: int,
        secret: bytes,
        done: set[tuple[str, str]],
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        clean_burned_in: bool = False,
        blank_text: BurnedInTextCheck | None = None,
    ):
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        self._context = multiprocessing.get_context(method)
        self.image_size = image_size
        self._initargs = (
            os.getpid(),
            image_size,
            secret,
            frozenset(done),
            pixel_budget,
            clean_burned_in,
            blank_text,
        )
        self._workers = max(1, workers)
        self._pool = self._new_pool(self._workers)
        self._pool.submit(_ready).result()  # start the processes now, before any model or thread

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers, mp_context=self._context, initializer=_start_worker, initargs=self._initargs
        )

    def submit(self, source: InputFile) -> Future:
        try:
            return self._pool.submit(_read, source)
        except BrokenProcessPool:
            self._restart()
            return self._pool.submit(_read, source)

    def result(self, source: InputFile, future: Future) -> Prepared | Outcome:
        """The input's outcome; if its process died, the input is retried alone."""
        try:
            return future.result()
        except BrokenProcessPool:
            self._restart()
            return self._isolated(source)

    def _restart(self) -> None:
        if getattr(self._pool, "_broken", False):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool(self._workers)

    def _isolated(self, source: InputFile) -> Prepared | Outcome:
        pool = self._new_pool(1)
        try:
            return pool.submit(_read, source).result()
        except BrokenProcessPool:
            return Outcome(source, "", "failed", "reader_crash")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
