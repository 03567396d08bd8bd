"""The two ways reading data fails: one image cannot be read, or a data set cannot be opened."""

from __future__ import annotations

from pathlib import Path

from privdiff_core.errors import PrivdiffError


class ImageReadError(PrivdiffError, ValueError):
    """One image file cannot be read; the message names the file and the reason.

    `path` is the file (None for a pydicom Dataset that came from memory) and `reason` the bare
    reason, so callers that collect failures (a release that reports every refused file) can
    tabulate them without parsing the message.
    """

    def __init__(self, path: str | Path | None, reason: str):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        where = str(path) if path is not None else "<DICOM dataset in memory>"
        super().__init__(f"{where}: {reason}")


class DatasetError(PrivdiffError, ValueError):
    """A data set folder cannot be opened: missing or malformed label files, missing images."""
