"""Hospitals of the synthetic federation: who they see, what they find, how their films look.

Sites differ the way real ones do (non-IID): a tertiary centre with an older population and
more cardiomegaly and masses; a community hospital seeing younger patients with pneumonia; an
intensive care unit shooting bedside AP films full of effusions, oedema and electrodes; an
outpatient clinic with few findings. Their scanners differ too: CR or DX, 8 to 16 bits,
MONOCHROME1 or 2, contrast curve, detector noise and sharpness, edge enhancement, collimation
borders and the side marker. Four archetypes are defined; sites beyond four reuse them with
jittered settings, so any number of sites can be made.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import numpy as np

from privdiff_core.attributes import FINDINGS

# Base prevalence per image, set near ChestX-ray14's rates and ordering (Infiltration 18%, Effusion
# 12%, Atelectasis 10% there) but raised for the rare findings, so that the test split of a few hundred
# patients holds enough positives for a per-finding AUC that means something.
BASE_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.1,
    "Cardiomegaly": 0.08,
    "Effusion": 0.12,
    "Infiltration": 0.12,
    "Mass": 0.06,
    "Nodule": 0.07,
    "Pneumonia": 0.05,
    "Pneumothorax": 0.06,
    "Consolidation": 0.06,
    "Edema": 0.05,
    "Emphysema": 0.06,
    "Fibrosis": 0.05,
    "Pleural_Thickening": 0.06,
    "Hernia": 0.04,
}
# How risk moves with age: prevalence is scaled by (1 + slope * (age_factor - 0.45)).
AGE_SLOPE: dict[str, float] = {
    "Atelectasis": 0.6,
    "Cardiomegaly": 1.6,
    "Effusion": 1.2,
    "Infiltration": 0.2,
    "Mass": 1.2,
    "Nodule": 0.8,
    "Pneumonia": 0.0,
    "Pneumothorax": -1.2,
    "Consolidation": 0.2,
    "Edema": 1.2,
    "Emphysema": 1.4,
    "Fibrosis": 1.4,
    "Pleural_Thickening": 1.0,
    "Hernia": 1.6,
}


@dataclass(frozen=True)
class SiteProfile:
    """One hospital: its scanner, its patients and its case mix."""

    index: int
    institution: str
    station: str
    manufacturer: str
    model: str
    modality: str  # "CR" or "DX"
    photometric: str  # "MONOCHROME2" (bone bright) or "MONOCHROME1" (stored inverted)
    bits_stored: int  # 8..16
    rescale: tuple[float, float] | None  # (slope, intercept) written to the header, or none
    field_mm: float  # detector field of view (pixel spacing = field / size)
    # look of the films
    lut_centre: float  # density mapped to mid-grey
    lut_contrast: float  # slope of the sigmoid display curve
    gamma: float
    noise: float  # detector noise, display units at mid-grey, for a 1024-pixel film
    blur: float  # unsharpness, in patient units (0.01 = 0.5% of the field)
    edge_enhance: float  # unsharp-mask gain of the vendor's processing
    collimation: tuple[float, float, float, float]  # mean shutter width: top, bottom, left, right
    marker: str  # lead side marker letter in a top corner ("L", "R" or "")
    # patients
    ap_fraction: float
    electrode_rate: float
    age_mean: float
    age_sd: float
    female_fraction: float
    prevalence_scale: dict[str, float] = field(default_factory=dict)
    first_study: dt.date = dt.date(2018, 1, 1)

    @property
    def name(self) -> str:
        return f"site_{self.index:02d}"

    def prevalence(self, finding: str, age_factor: float) -> float:
        """Probability that a film of a patient of this age shows `finding`."""
        base = BASE_PREVALENCE[finding] * self.prevalence_scale.get(finding, 1.0)
        return float(np.clip(base * (1.0 + AGE_SLOPE[finding] * (age_factor - 0.45)), 0.0, 0.6))


_ARCHETYPES = (
    SiteProfile(
        index=0,
        institution="Northgate University Hospital",
        station="NUH-DR-THX1",
        manufacturer="Helion Medical Systems",
        model="Helion DR 4300",
        modality="DX",
        photometric="MONOCHROME2",
        bits_stored=12,
        rescale=None,
        field_mm=430.0,
        lut_centre=0.72,
        lut_contrast=3.0,
        gamma=1.0,
        noise=0.02,
        blur=0.004,
        edge_enhance=0.5,
        collimation=(0.01, 0.01, 0.0, 0.0),
        marker="L",
        ap_fraction=0.15,
        electrode_rate=0.4,
        age_mean=59.0,
        age_sd=16.0,
        female_fraction=0.47,
        prevalence_scale={"Cardiomegaly": 1.6, "Mass": 1.8, "Nodule": 1.5, "Effusion": 1.2, "Hernia": 1.4},
        first_study=dt.date(2017, 3, 6),
    ),
    SiteProfile(
        index=1,
        institution="St Brigid Community Hospital",
        station="SBCH-CR02",
        manufacturer="Oren Imaging",
        model="OrenCR 900",
        modality="CR",
        photometric="MONOCHROME1",
        bits_stored=10,
        rescale=(1.0, 0.0),
        field_mm=350.0,
        lut_centre=0.70,
        lut_contrast=2.6,
        gamma=0.85,
        noise=0.045,
        blur=0.011,
        edge_enhance=0.0,
        collimation=(0.03, 0.02, 0.025, 0.025),
        marker="R",
        ap_fraction=0.1,
        electrode_rate=0.2,
        age_mean=45.0,
        age_sd=17.0,
        female_fraction=0.56,
        prevalence_scale={
            "Pneumonia": 2.2,
            "Consolidation": 1.8,
            "Infiltration": 1.6,
            "Pneumothorax": 1.4,
            "Cardiomegaly": 0.6,
            "Mass": 0.5,
        },
        first_study=dt.date(2018, 9, 17),
    ),
    SiteProfile(
        index=2,
        institution="Riverside Medical Center",
        station="RMC-ICU-PORT3",
        manufacturer="Kestrel Healthcare",
        model="Kestrel Mobile DX",
        modality="DX",
        photometric="MONOCHROME2",
        bits_stored=14,
        rescale=(0.5, 0.0),
        field_mm=400.0,
        lut_centre=0.78,
        lut_contrast=2.8,
        gamma=1.1,
        noise=0.035,
        blur=0.007,
        edge_enhance=0.3,
        collimation=(0.02, 0.04, 0.02, 0.02),
        marker="",
        ap_fraction=0.85,
        electrode_rate=0.75,
        age_mean=66.0,
        age_sd=14.0,
        female_fraction=0.42,
        prevalence_scale={
            "Effusion": 2.0,
            "Edema": 2.5,
            "Atelectasis": 1.8,
            "Pneumothorax": 1.5,
            "Cardiomegaly": 1.3,
            "Nodule": 0.6,
            "Emphysema": 0.8,
        },
        first_study=dt.date(2019, 1, 14),
    ),
    SiteProfile(
        index=3,
        institution="Lakeside Outpatient Imaging",
        station="LOI-CR-A",
        manufacturer="Oren Imaging",
        model="OrenCR 600",
        modality="CR",
        photometric="MONOCHROME2",
        bits_stored=8,
        rescale=None,
        field_mm=430.0,
        lut_centre=0.72,
        lut_contrast=3.3,
        gamma=1.2,
        noise=0.04,
        blur=0.009,
        edge_enhance=0.0,
        collimation=(0.03, 0.0, 0.05, 0.05),
        marker="L",
        ap_fraction=0.02,
        electrode_rate=0.0,
        age_mean=52.0,
        age_sd=15.0,
        female_fraction=0.52,
        prevalence_scale={
            "Emphysema": 1.6,
            "Fibrosis": 1.6,
            "Nodule": 1.3,
            "Pleural_Thickening": 1.5,
            "Effusion": 0.5,
            "Edema": 0.3,
            "Pneumothorax": 0.6,
            "Atelectasis": 0.6,
        },
        first_study=dt.date(2016, 5, 2),
    ),
)


def site_profile(index: int, seed: int) -> SiteProfile:
    """Site `index` of a federation: an archetype, jittered beyond the first four."""
    if index < 0:
        raise ValueError(f"site index must be >= 0, got {index}")
    base = _ARCHETYPES[index % len(_ARCHETYPES)]
    round_ = index // len(_ARCHETYPES)
    if round_ == 0:
        return base
    rng = np.random.default_rng([seed, index, 0x517E])
    scale = {
        name: float(np.exp(rng.normal(0, 0.35))) * base.prevalence_scale.get(name, 1.0) for name in FINDINGS
    }
    return replace(
        base,
        index=index,
        institution=f"{base.institution} {('North', 'South', 'East', 'West')[round_ % 4]} {round_ + 1}",
        station=f"{base.station}-{round_ + 1}",
        bits_stored=int(rng.choice([8, 10, 12, 14, 16])),
        photometric=str(rng.choice(["MONOCHROME2", "MONOCHROME1"], p=[0.7, 0.3])),
        lut_centre=base.lut_centre + rng.normal(0, 0.03),
        lut_contrast=base.lut_contrast * float(np.exp(rng.normal(0, 0.12))),
        gamma=base.gamma * float(np.exp(rng.normal(0, 0.1))),
        noise=base.noise * float(np.exp(rng.normal(0, 0.25))),
        blur=base.blur * float(np.exp(rng.normal(0, 0.25))),
        age_mean=base.age_mean + rng.normal(0, 5),
        female_fraction=float(np.clip(base.female_fraction + rng.normal(0, 0.05), 0.3, 0.7)),
        prevalence_scale=scale,
        first_study=base.first_study + dt.timedelta(days=int(rng.integers(0, 700))),
    )
