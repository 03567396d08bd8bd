"""The attributes every chest X-ray sample carries: 14 findings, an age group and a sex.

Identity, age group and sex are the *sensitive* attributes the anonymizer must hide; the
findings are the *diagnosis* it must keep. Names follow ChestX-ray14 (Wang et al. 2017), the
data set the paper reports on, so CXR14 labels map one to one.
"""

from __future__ import annotations

import re

# ChestX-ray14's 14 findings, spelled as in its Data_Entry_2017.csv.
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NUM_FINDINGS = len(FINDINGS)

# Age groups in years: [0, 40), [40, 60), [60, 80), [80, inf).
AGE_GROUP_EDGES: tuple[int, ...] = (40, 60, 80)
AGE_GROUPS: tuple[str, ...] = ("<40", "40-59", "60-79", "80+")
NUM_AGE_GROUPS = len(AGE_GROUPS)

SEXES: tuple[str, ...] = ("M", "F")  # index 0 = male, 1 = female, as DICOM PatientSex spells them
NUM_SEXES = len(SEXES)

UNKNOWN = -1  # age group or sex not known


def age_group(age_years: float | None) -> int:
    """Age group index of an age in years, or UNKNOWN for None / negative ages."""
    if age_years is None or age_years < 0:
        return UNKNOWN
    return sum(age_years >= edge for edge in AGE_GROUP_EDGES)


_DICOM_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$")
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def parse_dicom_age(value: str | None) -> float | None:
    """Years from a DICOM Age String ("062Y", "006M"); also accepts a bare number ("62").

    Real files carry bare numbers (the RSNA fixture's PatientAge is "62"), so those are read as
    years rather than refused. Returns None when the value is empty or not an age.
    """
    if value is None:
        return None
    match = _DICOM_AGE.match(str(value))
    if not match:
        return None
    number, unit = match.groups()
    return int(number) * _UNIT_YEARS[unit.upper()]


def sex_index(value: str | None) -> int:
    """0 for male, 1 for female, UNKNOWN otherwise (DICOM PatientSex 'O', empty, missing)."""
    if value is None:
        return UNKNOWN
    value = str(value).strip().upper()
    return SEXES.index(value) if value in SEXES else UNKNOWN
