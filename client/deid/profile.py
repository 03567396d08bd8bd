"""Apply the Basic Application Level Confidentiality Profile as an allow-list, recursively.

An attribute reaches the output only if the profile replaces it or keeps it *by name*; everything
else is removed, at every depth of nesting, whatever its VR. For every element:

1. File meta (group 0002), command (group 0000), group-length, private (odd group; the Basic
   Profile without Retain Safe Private, PS3.15 E.3.10), overlay (60xx) and curve (50xx)
   elements: removed, before their value is even read.
2. Attributes listed in Table E.1-1 get their Basic Profile action (`table.py`): X removes; Z
   empties; D writes a dummy of the VR; U remaps a UID with the site key; a sequence under D or
   U* is kept and its items go through these same rules. The value left is the profile's own.
3. Attributes on the short list of `retained.py` (what a valid derived CR/DX object needs: the
   SOP class, modality, body part, view, technique numbers, coded anatomy and view) are kept when
   their value passes that list's check (enumerated terms, numbers, the standard's UIDs, codes of
   PS3.16 with the standard's own meanings); otherwise removed.
4. Everything else: removed. About 320 text attributes of the data dictionary (alternative
   calendars, retired order numbers, free-text meanings in code sequences, ...) are in no table
   and once slipped through a block-list; an allow-list does not need to know them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from privdiff.client.deid.retained import RETAINED_BY_KEYWORD, standard_code_item, value_passes
from privdiff.client.deid.table import ActionTable, basic_profile
from privdiff.client.deid.uids import UIDMapper

# Action D: a non-zero-length dummy value consistent with the VR (PS3.15 Table E.1-1 legend).
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, object] = {
    **dict.fromkeys(("PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE"), DUMMY_TEXT),
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
    "UR": "urn:privdiff:anonymized",
    **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"), 0),
    **dict.fromkeys(("OB", "OW", "OF", "OD", "OL", "OV"), b"\x00\x00\x00\x00"),
}


@dataclass
class DeidReport:
    """What was done, counted by action (no values: the report may be logged)."""

    actions: Counter = field(default_factory=Counter)

    def count(self, action: str) -> None:
        self.actions[action] += 1


def _removed_unread(tag: BaseTag) -> bool:
    """Elements removed by position alone (rule 1)."""
    return (
        tag.group in (0x0000, 0x0002)
        or tag.element == 0x0000
        or tag.is_private
        or (tag.group & 0xFF00 in (0x5000, 0x6000) and tag.group % 2 == 0)
    )


class Deidentifier:
    """Annex E Basic Profile as an allow-list, with UIDs remapped by a site-keyed mapper."""

    def __init__(self, uid_mapper: UIDMapper, table: ActionTable | None = None):
        self.map_uid = uid_mapper
        self.table = table or basic_profile()

    def __call__(self, dataset: Dataset) -> DeidReport:
        """De-identify `dataset` in place (its file_meta is left alone: it is rebuilt on writing)."""
        report = DeidReport()
        self._walk(dataset, report)
        return report

    # -- walking ---------------------------------------------------------------------------------

    def _walk(self, dataset: Dataset, report: DeidReport) -> None:
        for tag in list(dataset.keys()):
            tag = Tag(tag)
            action = None if _removed_unread(tag) else self.table.action(tag)
            retained = RETAINED_BY_KEYWORD.get(keyword_for_tag(tag)) if action is None else None
            if action in (None, "X") and retained is None:
                # Removed without converting the value: a huge or malformed value is never read.
                del dataset[tag]
                report.count("private" if tag.is_private else "X")
                continue
            try:
                element = dataset[tag]  # converts raw elements; malformed values raise here
            except Exception:  # noqa: BLE001 -- any unreadable value is removed, never copied
                del dataset[tag]
                report.count("X")
                continue
            if action is not None:
                self._apply(dataset, element, action, report)
            else:
                self._retain(dataset, element, retained, report)

    def _retain(self, dataset: Dataset, element: DataElement, rule, report: DeidReport) -> None:
        if rule.check == "codes":
            items = [standard_code_item(item) for item in element.value] if element.VR == "SQ" else []
            kept = [item for item in items if item is not None]
            if kept:
                element.value = Sequence(kept)
                report.count("K")
                return
        elif element.VR != "SQ" and value_passes(rule, element):
            report.count("K")
            return
        del dataset[element.tag]
        report.count("X")

    # -- actions ---------------------------------------------------------------------------------

    def _apply(self, dataset: Dataset, element: DataElement, action: str, report: DeidReport) -> None:
        vr = element.VR
        if action == "X" or (action in ("U", "U*") and vr not in ("UI", "SQ")):
            del dataset[element.tag]
            report.count("X")
        elif vr == "SQ":
            if action == "Z":
                element.value = Sequence([])
                report.count("Z")
            else:  # D, U, U*: keep the sequence, de-identify what it holds
                for item in element.value:
                    self._walk(item, report)
                report.count(action)
        elif action == "Z":
            element.value = element.empty_value
            report.count("Z")
        elif vr == "UI" and action in ("U", "U*", "D"):
            self._remap_uids(element)
            report.count("U")
        elif action == "D" and vr in DUMMY_BY_VR:
            element.value = DUMMY_BY_VR[vr]
            report.count("D")
        else:  # D on a VR without a dummy (UN from an implicit-VR file, ...): removed
            del dataset[element.tag]
            report.count("X")

    def _remap_uids(self, element: DataElement) -> None:
        if element.VM > 1:
            element.value = [self.map_uid(v) if v else v for v in element.value]
        elif element.value:
            element.value = self.map_uid(element.value)
