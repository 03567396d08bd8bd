"""A site's findings per film, read from its reports: what the generative anonymizer is told.

The generative mode draws a new patient with the findings it is given. Without them it must
estimate them from the film, and a yes/no estimate keeps only part of the diagnosis
(benchmarks/estimated_findings_limit.py: at 64 px the main job's estimator keeps Youden's J ~0.18,
so outputs reach diagnosis AUC ~0.55 where films drawn from the report's findings reach the
renderer's fidelity). A site that has the radiology reports (or labels mined from them) passes
them as a CSV:

    sop_instance_uid,file,Atelectasis,Cardiomegaly,...,Hernia     the site layout's labels.csv
    1.2.3.4,images/p1/a.dcm,0,1,...,0                            1 / 0 / empty (= not stated)

or, ChestX-ray14 style, one `Finding Labels` column: `Cardiomegaly|Effusion`, `No Finding`.
A film is looked up by its SOP Instance UID (`sop_instance_uid`) or its path relative to the
input folder (`file`); at least one of the two columns must be there. Films the table does not
list, and findings it leaves empty, are estimated from the film as without a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from privdiff_core.attributes import FINDINGS, NUM_FINDINGS
from privdiff_core.data.errors import DatasetError
from privdiff_core.data.layouts.chestxray14 import finding_labels
from privdiff_core.data.tables import binary_label, read_table
from privdiff_core.model.conditioning import Conditions

KEY_COLUMNS = ("sop_instance_uid", "file")
FINDING_LABELS_COLUMN = "Finding Labels"
Entry = tuple[tuple[float, ...], tuple[bool, ...]]  # (labels, known) per finding


@dataclass(frozen=True)
class FindingsTable:
    """Findings per film, by SOP Instance UID and by relative path."""

    path: Path
    by_uid: dict[str, Entry]
    by_file: dict[str, Entry]

    def __len__(self) -> int:
        return max(len(self.by_uid), len(self.by_file))

    def lookup(
        self, sop_instance_uid: str | None = None, file: str | PurePosixPath | None = None
    ) -> Entry | None:
        """The film's entry by UID first, then by relative path; None when the table lacks it."""
        if sop_instance_uid and sop_instance_uid in self.by_uid:
            return self.by_uid[sop_instance_uid]
        if file is not None:
            return self.by_file.get(_normal_path(str(file)))
        return None

    @staticmethod
    def conditions(entries: Sequence[Entry | None]) -> Conditions:
        """Conditions of a batch: the listed findings known, everything else left to estimation."""
        labels = torch.zeros(len(entries), NUM_FINDINGS)
        known = torch.zeros(len(entries), NUM_FINDINGS, dtype=torch.bool)
        for row, entry in enumerate(entries):
            if entry is not None:
                labels[row] = torch.tensor(entry[0])
                known[row] = torch.tensor(entry[1])
        return Conditions(labels=labels, label_mask=known)


def read_findings_table(path: str | Path) -> FindingsTable:
    """Read and check a findings CSV (module docstring); errors name the file, line and column."""
    path = Path(path)
    rows = read_table(path, (), "findings table")
    if not rows:
        raise DatasetError(f"{path}: the findings table has no rows")
    columns = set(rows[0])
    keys = [column for column in KEY_COLUMNS if column in columns]
    if not keys:
        raise DatasetError(f"{path}: the findings table needs a sop_instance_uid or file column")
    per_finding = [name for name in FINDINGS if name in columns]
    if FINDING_LABELS_COLUMN not in columns and not per_finding:
        raise DatasetError(
            f"{path}: the findings table has no findings: give a '{FINDING_LABELS_COLUMN}' column "
            f"or one column per finding ({', '.join(FINDINGS)})"
        )
    by_uid: dict[str, Entry] = {}
    by_file: dict[str, Entry] = {}
    for line, row in enumerate(rows, start=2):
        entry = _entry(row, per_finding, path, line)
        for column, index, normal in (("sop_instance_uid", by_uid, str), ("file", by_file, _normal_path)):
            value = row.get(column, "")
            if not value:
                continue
            key = normal(value)
            if key in index:
                raise DatasetError(f"{path}, line {line}: {column} {value!r} is listed twice")
            index[key] = entry
        if not any(row.get(column) for column in keys):
            raise DatasetError(f"{path}, line {line}: no {' or '.join(keys)} to find the film by")
    return FindingsTable(path=path, by_uid=by_uid, by_file=by_file)


def _entry(row: dict[str, str], per_finding: list[str], path: Path, line: int) -> Entry:
    if FINDING_LABELS_COLUMN in row and row[FINDING_LABELS_COLUMN]:
        return finding_labels(row[FINDING_LABELS_COLUMN], path, line), (True,) * NUM_FINDINGS
    values = {name: binary_label(row.get(name, ""), path, line, name) for name in per_finding}
    labels = tuple(values.get(name) or 0.0 for name in FINDINGS)
    known = tuple(values.get(name) is not None for name in FINDINGS)
    return labels, known


def _normal_path(value: str) -> str:
    """A relative path as the table and the input tree both spell it (forward slashes, no ./)."""
    return PurePosixPath(value.replace("\\", "/")).as_posix().removeprefix("./")
