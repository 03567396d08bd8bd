"""The `oracle` method: every film's findings re-rendered on a new patient of its site.

On a federation written by `privdiff synth` the generator knows what an ideal anonymizer would
output: the same findings (the film's labels) on a freshly drawn person (new anatomy, age and
sex) filmed by the same site's scanner (`privdiff_core.synth.oracle`). Its retrained re-ID AUC
is the privacy floor and its diagnosis AUC the utility ceiling for any anonymizer on that data:
what it still leaks, the findings, site and demographics give away on their own.

The films take the same road as the data's own: written as the site's DICOM (bit depth,
photometric interpretation, rescale) and read back by the reader the evaluation uses, then
resized to the evaluated image size. Real data has no such generator: the method is skipped
there, with a one-line note (`oracle_for_data`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from privdiff_core.attributes import FINDINGS
from privdiff_core.data.dicom import dicom_pixels
from privdiff_core.data.grey import square_resize, to_signed
from privdiff_core.synth import GENERATOR_VERSION, SynthError, SynthParams
from privdiff_core.synth.dicom import build_dataset
from privdiff_core.synth.oracle import oracle_sample
from privdiff_core.synth.sites import SiteProfile, site_profile

from .linkage import site_of
from .methods import Method, MethodError
from .protocol import Cohort, derive_seed

FEDERATION_FILE = "federation.json"
ORACLE_LABEL = "Oracle (same findings, new patient, same site)"


class OracleMethod(Method):
    """The ideal anonymizer of a synthetic federation (module docstring)."""

    def __init__(self, params: SynthParams) -> None:
        super().__init__(
            "oracle",
            ORACLE_LABEL,
            "oracle",
            {"synth": asdict(params), "generator_version": GENERATOR_VERSION},
        )
        self.params = params
        sites = [site_profile(s, params.seed) for s in range(params.sites)]
        self.sites: dict[str, SiteProfile] = {site.name: site for site in sites}

    def site(self, patient_id: str) -> SiteProfile:
        name = site_of(patient_id)
        if name not in self.sites:
            raise MethodError(
                f"oracle: patient {patient_id!r} is not from a site of this federation "
                f"({', '.join(self.sites)}); evaluate the federation folder itself, not one site"
            )
        return self.sites[name]

    def film(self, cohort: Cohort, index: int, key: int) -> torch.Tensor:
        """(1, S, S) in [-1, 1]: the oracle's version of film `index` of the cohort."""
        known = cohort.label_mask[index] & (cohort.labels[index] > 0.5)
        findings = [FINDINGS[k] for k in torch.nonzero(known).flatten().tolist()]
        sample = oracle_sample(self.site(cohort.patient_ids[index]), findings, self.params, key)
        unit = square_resize(
            dicom_pixels(build_dataset(sample.image, sample.study, self.params.seed)), cohort.image_size
        )
        return torch.from_numpy(to_signed(unit)).unsqueeze(0)

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        out = torch.empty_like(cohort.images)
        for k in tqdm(range(len(cohort)), desc="oracle", disable=not progress, leave=False, unit="img"):
            out[k] = self.film(cohort, k, derive_seed(seed, k))  # per film: one new person each
        return out


def oracle_for_data(data_root: str | Path) -> tuple[OracleMethod | None, str]:
    """(the oracle of a `privdiff synth` federation, '') or (None, why it is skipped, one line)."""
    path = Path(data_root) / FEDERATION_FILE
    if not path.is_file():
        return None, (
            f"oracle skipped: {data_root} is not a synthetic federation (no {FEDERATION_FILE}); only "
            "the generator knows each film's findings well enough to re-render them on a new patient"
        )
    try:
        record = json.loads(path.read_text())
        params = SynthParams.from_mapping(record.get("arguments") or {})
    except (OSError, ValueError, SynthError) as err:
        return None, f"oracle skipped: {path} cannot be read as a federation record ({err})"
    made_by = str(record.get("generator_version"))
    if made_by != GENERATOR_VERSION:
        return None, (
            f"oracle skipped: {data_root} was made by generator {made_by}, this is {GENERATOR_VERSION}; "
            "regenerate it with `privdiff synth` so that the oracle draws from the same sites"
        )
    return OracleMethod(params), ""
