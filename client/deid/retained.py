"""The short list of attributes a released object keeps although Table E.1-1 does not act on them.

De-identification is an allow-list (`profile.py`): an attribute reaches the output only if the
standard's Basic Profile replaces it (actions D, Z, U, U* of Table E.1-1: the value written is
the profile's own) or if it is listed in `retained_attributes.csv` (data, not code). Every entry
says why a valid derived radiograph needs it (PS3.3 module and type) and how its value is
checked: only values that cannot carry a name pass (enumerated terms, numbers, the standard's own
UIDs, codes of the standard's coding schemes). A value that fails its check is removed, never
kept "because the attribute is allowed". `tests/client/test_allow_list.py` proves that no entry
is an attribute Table E.1-1 acts on (the standard's action wins) and that each is in PS3.6.

Kinds of check:

- `terms`: a Code String whose every value is in a fixed vocabulary (upper-cased, trimmed);
- `number`: IS/DS (or binary numeric) values that parse as finite numbers;
- `standard_uid`: a UID under the standard's root 1.2.840.10008 (a SOP class, never an instance);
- `orientation`: Patient Orientation's direction letters (A, P, L, R, H, F; PS3.3 C.7.6.1.1.1);
- `codes`: a code sequence; each item keeps only Code Value + Coding Scheme Designator, and only
  when the pair is in PS3.16 (pydicom's concept dictionary); its Code Meaning is rewritten from
  that dictionary, never copied from the input.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr._concepts_dict import concepts  # PS3.16's codes as pydicom ships them (pinned <4)

STANDARD_UID_ROOT = "1.2.840.10008."
LIST_PATH = Path(__file__).with_name("retained_attributes.csv")
CHECKS = ("terms", "number", "standard_uid", "orientation", "codes")
_ORIENTATION = re.compile(r"^[APLRHF]{0,3}$")


@dataclass(frozen=True)
class Retained:
    keyword: str
    check: str  # one of CHECKS
    why: str
    terms: frozenset[str] = frozenset()


def read_retained(path: Path = LIST_PATH) -> tuple[Retained, ...]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    retained = []
    for row in rows:
        if row["check"] not in CHECKS:
            raise ValueError(
                f"{path.name}: {row['keyword']} has check {row['check']!r}; known: {', '.join(CHECKS)}"
            )
        terms = frozenset(t for t in row["terms"].split("|") if t)
        retained.append(Retained(row["keyword"], row["check"], row["why"], terms))
    return tuple(retained)


RETAINED: tuple[Retained, ...] = read_retained()
RETAINED_BY_KEYWORD: dict[str, Retained] = {r.keyword: r for r in RETAINED}
# Body Part Examined values that name the chest (the release accepts exactly these).
CHEST_BODY_PARTS = RETAINED_BY_KEYWORD["BodyPartExamined"].terms
# Anatomic Region Sequence codes of the chest (PS3.16 CID 4031 / Annex L): SNOMED CT's current
# "Thorax" concept, its retired "Chest" and "Thorax" predecessors, "Lung"; and the chest and lung
# under the retired SNOMED-RT designator SRT that older devices still write.
CHEST_REGION_CODES = frozenset(
    {
        ("SCT", "816094009"),
        ("SCT", "43799004"),
        ("SCT", "51185008"),
        ("SCT", "39607008"),
        ("SRT", "T-D3000"),
        ("SRT", "T-28000"),
    }
)


@lru_cache(maxsize=1)
def standard_code_meanings() -> dict[tuple[str, str], str]:
    """(coding scheme designator, code value) -> the meaning PS3.16 gives it (first one listed)."""
    meanings: dict[tuple[str, str], str] = {}
    for scheme, by_name in concepts.items():
        for by_value in by_name.values():
            for value, (meaning, _cids) in by_value.items():
                meanings.setdefault((scheme, value), meaning)
    return meanings


def _values(element: DataElement) -> list:
    value = element.value
    if value is None or value == "":
        return []
    return list(value) if element.VM > 1 else [value]


def _is_finite_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def value_passes(rule: Retained, element: DataElement) -> bool:
    """True when every value of `element` is one `rule` allows (an empty value always passes)."""
    values = _values(element)
    if rule.check == "terms":
        return all(str(v).strip().upper() in rule.terms for v in values)
    if rule.check == "number":
        return all(_is_finite_number(v) for v in values)
    if rule.check == "standard_uid":
        return all(str(v).startswith(STANDARD_UID_ROOT) for v in values)
    if rule.check == "orientation":
        return all(_ORIENTATION.match(str(v).strip().upper()) for v in values)
    raise ValueError(f"{rule.keyword}: check {rule.check!r} does not apply to a single value")


def standard_code_item(item: Dataset) -> Dataset | None:
    """A fresh code item (value, scheme, the standard's meaning), or None if not a PS3.16 code."""
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
    value = str(item.get("CodeValue", "") or "").strip()
    meaning = standard_code_meanings().get((scheme, value))
    if meaning is None:
        return None
    clean = Dataset()
    clean.CodeValue = value
    clean.CodingSchemeDesignator = scheme
    clean.CodeMeaning = meaning
    return clean
