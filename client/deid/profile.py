"""Apply the Basic Application Level Confidentiality Profile to a dataset, recursively.

Order of rules for every element, at every depth of nesting:

1. File meta (group 0002), command (group 0000) and group-length elements inside a dataset are
   removed: the file meta information is rebuilt when the output is written.
2. Private attributes (odd groups, private creators included) are removed: the Basic Profile
   without the Retain Safe Private option (PS3.15 E.3.10).
3. Attributes listed in Table E.1-1 get their Basic Profile action (`table.py`). Patient's Age
   (X) and Patient's Sex (Z) are among them: we do not apply Retain Patient Characteristics.
4. Attributes the table does not list are kept (the standard's default), except where their VR
   says they may identify someone, a safety net beyond the table for what hospitals put where
   the standard does not expect it:
   - person names (PN), dates and times (DA, DT, TM) and ages (AS): removed;
   - free text, URIs and unknown content (LT, ST, UT, UC, UR, UN), bulk binary (OB, OW, OF, OD,
     OL, OV; this includes the original Pixel Data, which the release replaces): removed;
   - instance UIDs (UI): remapped like `U`; UIDs under the standard's own root 1.2.840.10008
     (SOP classes, transfer syntaxes, DICOM coding schemes) and coding-resource UIDs are kept;
   - overlay (60xx) and curve (50xx) groups: removed whole (burnt-in-like graphics that, besides,
     no longer fit the replaced pixels);
   - public tags unknown to both the table and pydicom's dictionary: removed;
   - sequences: kept, their items de-identified by these same rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_has_tag, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from client.deid.table import ActionTable, basic_profile
from client.deid.uids import UIDMapper

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

IDENTIFYING_VRS = frozenset({"PN", "DA", "DT", "TM", "AS"})
OPAQUE_VRS = frozenset({"LT", "ST", "UT", "UC", "UR", "UN", "OB", "OW", "OF", "OD", "OL", "OV"})
STANDARD_UID_ROOT = "1.2.840.10008."
# UIDs that name a coding resource (a terminology, a context group), never a patient or an instance.
CODING_RESOURCE_UIDS = frozenset({"CodingSchemeUID", "ContextUID", "MappingResourceUID"})


@dataclass
class DeidReport:
    """What was done, counted by action (no values: the report may be logged)."""

    actions: Counter = field(default_factory=Counter)

    def count(self, action: str) -> None:
        self.actions[action] += 1


def _is_overlay_or_curve(tag: BaseTag) -> bool:
    return tag.group & 0xFF00 in (0x5000, 0x6000) and tag.group % 2 == 0


def _keep_uid(tag: BaseTag, value: str) -> bool:
    return value.startswith(STANDARD_UID_ROOT) or keyword_for_tag(tag) in CODING_RESOURCE_UIDS


class Deidentifier:
    """Annex E Basic Profile (+ the safety net above) with UIDs remapped by a site-keyed mapper."""

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
            if tag.group in (0x0000, 0x0002) or tag.element == 0x0000 or tag.is_private:
                del dataset[tag]
                report.count("private" if tag.is_private else "X")
                continue
            try:
                element = dataset[tag]  # converts raw elements; malformed values raise here
            except Exception:  # noqa: BLE001 -- any unreadable value is removed, never copied
                del dataset[tag]
                report.count("X")
                continue
            action = self.table.action(tag) or self._unlisted_action(tag, element)
            self._apply(dataset, element, action, report)

    def _unlisted_action(self, tag: BaseTag, element: DataElement) -> str:
        """The safety net for attributes Table E.1-1 does not list (see the module docstring)."""
        vr = element.VR
        if _is_overlay_or_curve(tag) or not dictionary_has_tag(tag):
            return "X"
        if vr == "SQ":
            return "K"
        # Implicit-VR files leave some VRs ambiguous ("OB or OW", "US or SS"): any risky reading wins.
        if set(vr.split(" or ")) & (IDENTIFYING_VRS | OPAQUE_VRS):
            return "X"
        if vr == "UI":
            values = element.value if element.VM > 1 else [element.value]
            return "K" if all(_keep_uid(tag, str(v or "")) for v in values) else "U"
        return "K"

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
            else:  # K, D, U, U*: keep the sequence, de-identify what it holds
                for item in element.value:
                    self._walk(item, report)
                report.count(action)
        elif action == "Z":
            element.value = element.empty_value
            report.count("Z")
        elif vr == "UI" and action in ("U", "U*", "D"):
            self._remap_uids(element)
            report.count("U")
        elif action == "D":
            if vr not in DUMMY_BY_VR:
                del dataset[element.tag]
                report.count("X")
            else:
                element.value = DUMMY_BY_VR[vr]
                report.count("D")
        else:
            report.count("K")

    def _remap_uids(self, element: DataElement) -> None:
        if element.VM > 1:
            element.value = [self.map_uid(v) if v else v for v in element.value]
        elif element.value:
            element.value = self.map_uid(element.value)
