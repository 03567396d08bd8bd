"""PS3.15 Table E.1-1 (Basic Profile column) as shipped in `annex_e_basic_profile.csv`.

Action codes, as the standard defines them (PS3.15 E.3 / Table E.1-1 legend):

- `D` replace with a non-zero-length dummy value consistent with the VR
- `Z` replace with a zero-length value (or a dummy value)
- `X` remove
- `U` replace a UID with a non-zero-length UID, consistently within the set of instances
- compound codes (`X/Z`, `X/D`, `Z/D`, `X/Z/D`, `X/Z/U*`) let the de-identifier pick the weakest
  removal that still leaves a conforming object: we resolve them once, here, for the IOD we
  write (Secondary Capture Image, see `stamp.py`), where none of the X/.. attributes is Type 1/2.

There is no `K` (keep) here: an attribute the table does not list is removed unless the short
checked list of `retained.py` names it (the allow-list of `profile.py`). `C` (clean) belongs
only to options we do not apply (Clean Descriptors / Structured Content / Graphics): the Basic
column never uses it, and a table that did would be rejected on load.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("annex_e_basic_profile.csv")

# Table E.1-1 Basic Profile codes -> the one action this de-identifier performs.
# "U*" (from X/Z/U*): keep the sequence, de-identify its items recursively, remap their UIDs --
# that keeps a derived image's references consistent instead of dropping them.
RESOLVED_ACTION: dict[str, str] = {
    "D": "D",
    "Z": "Z",
    "X": "X",
    "U": "U",
    "Z/D": "Z",
    "X/Z": "X",
    "X/D": "X",
    "X/Z/D": "X",
    "X/Z/U*": "U*",
}


@dataclass(frozen=True)
class TableRow:
    tag: str  # "(GGGG,EEEE)"; repeating groups use 'x' for any hex digit, e.g. "(60xx,3000)"
    keyword: str  # pydicom keyword, empty for attributes newer than pydicom's dictionary
    name: str  # the standard's attribute name
    action: str  # Basic Profile code as the standard writes it, e.g. "X/Z/D"


@dataclass(frozen=True)
class _Mask:
    value: int
    mask: int

    def matches(self, tag: int) -> bool:
        return tag & self.mask == self.value


def _parse_tag(text: str) -> tuple[int, int]:
    """'(60xx,3000)' -> (0x60003000, 0xFF00FFFF): the tag value and which bits are fixed."""
    digits = text.strip("()").replace(",", "")
    if len(digits) != 8:
        raise ValueError(f"malformed tag {text!r} in {TABLE_PATH.name}")
    value = int("".join("0" if c in "xX" else c for c in digits), 16)
    mask = int("".join("0" if c in "xX" else "F" for c in digits), 16)
    return value, mask


class ActionTable:
    """Look up the resolved Basic Profile action of a tag (exact tags first, then repeating groups)."""

    def __init__(self, rows: list[TableRow]):
        self.rows = rows
        self._exact: dict[int, str] = {}
        self._masked: list[tuple[_Mask, str]] = []
        for row in rows:
            if row.action not in RESOLVED_ACTION:
                raise ValueError(
                    f"{TABLE_PATH.name}: {row.tag} has action {row.action!r}, which the Basic Profile "
                    f"does not use; known: {', '.join(RESOLVED_ACTION)}"
                )
            value, mask = _parse_tag(row.tag)
            action = RESOLVED_ACTION[row.action]
            if mask == 0xFFFFFFFF:
                self._exact[value] = action
            else:
                self._masked.append((_Mask(value, mask), action))

    def action(self, tag: int) -> str | None:
        """Resolved action ('D', 'Z', 'X', 'U', 'U*') for `tag`, or None when the table is silent."""
        found = self._exact.get(int(tag))
        if found is not None:
            return found
        for mask, action in self._masked:
            if mask.matches(int(tag)):
                return action
        return None

    def __len__(self) -> int:
        return len(self.rows)


def read_rows(path: Path = TABLE_PATH) -> list[TableRow]:
    with open(path, newline="") as handle:
        lines = (line for line in handle if not line.startswith("#"))
        return [TableRow(r["tag"], r["keyword"], r["name"], r["action"]) for r in csv.DictReader(lines)]


@lru_cache(maxsize=1)
def basic_profile() -> ActionTable:
    """The shipped Table E.1-1 (loaded once per process)."""
    return ActionTable(read_rows())
