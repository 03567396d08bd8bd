"""Synthetic chest X-ray federations whose patients carry real "chest biometrics".

No real CXR set with patient identities can be downloaded here, yet privacy is measured by
whether an attacker can re-identify a patient; so the project makes its own hospitals.
Frontal CXR phantoms are rendered from per-patient anatomy (rib cage, heart, spine, clavicles,
lungs, vessels, rare implants) that persists across follow-ups, changes with age and sex, shows
the 14 ChestX-ray14 findings, and is filmed by site-specific scanners (non-IID), then written
as real DICOM files with a labels CSV (docs/architecture.md, Contract 1).

    from privdiff_core.synth import SynthParams, generate_arrays, generate_federation
    arrays = generate_arrays(SynthParams(sites=2, patients=20, images_per_patient=3, size=64))
    generate_federation("data/synthetic", SynthParams())
"""

from privdiff_core.synth.federation import (
    GENERATOR_VERSION,
    SynthArrays,
    SynthError,
    SynthParams,
    SynthSample,
    generate_arrays,
    generate_federation,
    iter_federation,
)

__all__ = [
    "GENERATOR_VERSION",
    "SynthArrays",
    "SynthError",
    "SynthParams",
    "SynthSample",
    "generate_arrays",
    "generate_federation",
    "iter_federation",
]
