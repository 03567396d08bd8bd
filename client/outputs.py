"""Writing released files so that nothing is ever half-written.

Each file is written to a hidden temporary name in its final folder, flushed and fsync'ed, then
renamed over its final name (atomic on POSIX file systems) and the folder fsync'ed: a reader, a
crash or a `kill -9` sees either no file or the whole file. Temporary names carry a fixed suffix so
a later run can sweep up the leftovers of a killed one.

    OUT/released/<study>/<series>/<sop>.dcm     what may leave the site
    OUT/quarantine/<study>/<series>/<sop>.dcm   held back by the residual-risk check: stays
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from pathlib import Path

RELEASED_DIR = "released"
QUARANTINE_DIR = "quarantine"
_TMP_SUFFIX = ".privdiff-tmp"
_TMP_NAME = re.compile(r"^\..+\.\d+\.\d+" + re.escape(_TMP_SUFFIX) + "$")
_counter = itertools.count()
_counter_lock = threading.Lock()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """mkdir -p, fsync'ing each parent of a folder it creates (so the new entries survive a crash)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(path.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + fsync + rename; never leaves a partial `path`."""
    _make_dirs(path.parent)
    with _counter_lock:
        serial = next(_counter)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{serial}{_TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporary files a killed run left under OUT/released and OUT/quarantine."""
    removed = 0
    for sub in (RELEASED_DIR, QUARANTINE_DIR):
        root = out_dir / sub
        if not root.is_dir():
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                if _TMP_NAME.match(name):
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
    return removed


def is_temporary(path: Path) -> bool:
    return bool(_TMP_NAME.match(path.name))
