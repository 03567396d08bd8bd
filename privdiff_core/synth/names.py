"""Made-up but realistic-looking person names for DICOM headers.

They exist so that de-identification has real protected health information to remove, and so
its tests can check that it did. None of them belongs to a real patient.
"""

from __future__ import annotations

import numpy as np

FAMILY = (
    "ABERNATHY", "ALVAREZ", "ANDERSEN", "BAKER", "BANERJEE", "BECKER", "BOATENG", "BROOKS",
    "CARVALHO", "CHEN", "COLLINS", "DAVIES", "DELACROIX", "DIAZ", "DUBOIS", "EKSTROM", "EVANS",
    "FERREIRA", "FISCHER", "FITZGERALD", "GALLAGHER", "GARCIA", "GUPTA", "HANSEN", "HARRIS",
    "HOFFMANN", "HUGHES", "IBRAHIM", "ITO", "JANSSEN", "JOHNSON", "KAPOOR", "KELLY", "KIM",
    "KOWALSKI", "LARSEN", "LEE", "LINDQVIST", "LOPEZ", "MACLEOD", "MARTIN", "MENDES", "MORALES",
    "MURPHY", "NAKAMURA", "NGUYEN", "NOVAK", "OKAFOR", "OLSEN", "PATEL", "PETERSEN", "QUINN",
    "RAMIREZ", "REYES", "ROSSI", "SANTOS", "SCHMIDT", "SHARMA", "SILVA", "SULLIVAN", "TANAKA",
    "THOMPSON", "TORRES", "VAN DIJK", "VARGA", "WAGNER", "WALSH", "WANG", "WEBER", "WILLIAMS",
    "WONG", "YILMAZ", "ZIELINSKI",
)  # fmt: skip
GIVEN = {
    0: (
        "AARON", "AHMED", "ALAN", "ANDREW", "ARJUN", "BENJAMIN", "BRIAN", "CARLOS", "DANIEL",
        "DAVID", "EDWARD", "ERIK", "FRANCIS", "GEORGE", "HENRY", "HIROSHI", "IVAN", "JAMES",
        "JOHN", "JOSE", "KENNETH", "LUCAS", "MARK", "MATTHEW", "MICHAEL", "NIKOLAI", "OMAR",
        "PATRICK", "PAUL", "PETER", "RAJ", "RICHARD", "ROBERT", "SAMUEL", "STEPHEN", "THOMAS",
        "VICTOR", "WEI", "WILLIAM", "YUSUF",
    ),
    1: (
        "ABIGAIL", "AISHA", "ALICE", "AMELIA", "ANA", "ANNA", "BEATRICE", "CAROL", "CHLOE",
        "DIANA", "ELENA", "ELIZABETH", "EMMA", "FATIMA", "GRACE", "HANNAH", "HELEN", "INGRID",
        "ISABEL", "JANE", "JULIA", "KATHERINE", "LAURA", "LINDA", "MARGARET", "MARIA", "MEI",
        "NADIA", "OLIVIA", "PRIYA", "RACHEL", "ROSA", "SARAH", "SOFIA", "SUSAN", "TERESA",
        "URSULA", "VICTORIA", "YUKI", "ZOE",
    ),
}  # fmt: skip


def patient_name(rng: np.random.Generator, sex: int) -> str:
    """DICOM PN value "FAMILY^GIVEN" or "FAMILY^GIVEN^M" (a middle initial for some)."""
    family = FAMILY[rng.integers(len(FAMILY))]
    given = GIVEN[sex][rng.integers(len(GIVEN[sex]))]
    if rng.random() < 0.4:
        return f"{family}^{given}^{chr(ord('A') + int(rng.integers(26)))}"
    return f"{family}^{given}"


def staff_name(rng: np.random.Generator) -> str:
    """A referring physician or technologist, with a title for physicians now and then."""
    sex = int(rng.integers(2))
    name = f"{FAMILY[rng.integers(len(FAMILY))]}^{GIVEN[sex][rng.integers(len(GIVEN[sex]))]}"
    return name + "^^DR" if rng.random() < 0.3 else name
