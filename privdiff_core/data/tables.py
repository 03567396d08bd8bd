"""Label tables (CSV files) read with clear errors: missing file, missing columns, bad values."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from privdiff_core.data.errors import DatasetError


def read_table(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; `what` names the file's role in error messages."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's BOM
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in required if name not in columns]
            if missing:
                raise DatasetError(
                    f"{path}: {what} lacks column(s) {', '.join(missing)} "
                    f"(it has: {', '.join(columns) or 'no header'})"
                )
            # `if key`: drops the unnamed columns of trailing commas (ChestX-ray14 has them)
            return [
                {key.strip(): (value or "").strip() for key, value in row.items() if key} for row in reader
            ]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: {what} is not a readable CSV file ({err})") from err


def binary_label(value: str, path: Path, line: int, column: str) -> float | None:
    """1.0 / 0.0 for "1" / "0" (also "1.0", "0.0"), None for an empty cell; anything else fails."""
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number not in (0.0, 1.0):
        raise DatasetError(f"{path}, line {line}: {column} must be 1, 0 or empty, got {value!r}")
    return number
