"""Reader processes: results in order, and a file that kills its reader fails alone."""

from __future__ import annotations

import os

from phi_dicom import copy_real

import privdiff.client.readers as readers
from privdiff.client.intake import InputFile, Outcome, Prepared

SECRET = b"reader test secret 0123456789abc"
_original_read = readers._read


def crash_on_bad_files(source: InputFile):
    """Stands in for a decoder that segfaults on a malformed file: the process just dies."""
    if source.path.name.startswith("crash"):
        os._exit(3)
    return _original_read(source)


def test_a_crashing_input_fails_alone_and_the_others_are_read(tmp_path, monkeypatch):
    good = copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path)
    crash = copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path, "crash.dcm")
    other = copy_real("rsna_cr_jpeg_baseline_monochrome1.dcm", tmp_path)
    monkeypatch.setattr(readers, "_read", crash_on_bad_files)
    pool = readers.ReaderPool(2, 32, SECRET, set())
    try:
        sources = [InputFile(path, path.name) for path in (good, crash, other)]
        futures = [pool.submit(source) for source in sources]
        results = [pool.result(source, future) for source, future in zip(sources, futures, strict=True)]
        after = pool.result(sources[0], pool.submit(sources[0]))  # the pool works after a crash
    finally:
        pool.close()
    assert isinstance(results[0], Prepared) and isinstance(results[2], Prepared)
    assert isinstance(results[1], Outcome) and (results[1].status, results[1].reason) == (
        "failed",
        "reader_crash",
    )
    assert isinstance(after, Prepared) and after.image.shape == (32, 32)


def test_already_released_inputs_are_not_read_again(tmp_path):
    path = copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path)
    pool = readers.ReaderPool(1, 32, SECRET, set())
    try:
        first = pool.result(InputFile(path, "a"), pool.submit(InputFile(path, "a")))
    finally:
        pool.close()
    pool = readers.ReaderPool(1, 32, SECRET, {(first.input_sha, "a")})
    try:
        again = pool.result(InputFile(path, "a"), pool.submit(InputFile(path, "a")))
    finally:
        pool.close()
    assert (again.status, again.reason, again.input_sha) == ("skipped", "already_done", first.input_sha)
