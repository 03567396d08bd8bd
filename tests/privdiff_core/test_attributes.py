import pytest

from privdiff_core.attributes import FINDINGS, UNKNOWN, age_group, parse_dicom_age, sex_index


def test_fourteen_chestxray14_findings():
    assert len(FINDINGS) == 14 and len(set(FINDINGS)) == 14
    assert {"Cardiomegaly", "Effusion", "Nodule", "Mass", "Pneumothorax", "Consolidation"} <= set(FINDINGS)


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("062Y", 62),
        ("62", 62),
        ("006M", 0.5),
        ("052W", 52 * 7 / 365.25),
        ("", None),
        ("abc", None),
        (None, None),
    ],
)
def test_dicom_age_strings(value, years):
    assert parse_dicom_age(value) == (pytest.approx(years) if years is not None else None)


def test_age_groups_cover_edges():
    assert [age_group(a) for a in (0, 39.9, 40, 59, 60, 79, 80, 101)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert age_group(None) == UNKNOWN


def test_sex_index():
    assert (sex_index("M"), sex_index("f "), sex_index("O"), sex_index(None)) == (0, 1, UNKNOWN, UNKNOWN)
