"""The data carries chest biometrics: a small verifier re-identifies held-out patients.

A reduced version of benchmarks/biometrics.py (which runs the demo scale and reports >= 0.95):
fewer patients and smaller films so that it trains in about two minutes of CPU.
"""

import numpy as np
import pytest
import torch

from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.synth.biometrics import (
    LabelledImages,
    global_cue_auc,
    train_verifier_on,
    verification_auc,
)

SMALL = SynthParams(sites=2, patients=90, images_per_patient=3, size=48, seed=11)


def labelled(params: SynthParams) -> LabelledImages:
    arrays = generate_arrays(params)
    return LabelledImages(
        images=torch.from_numpy(arrays.images[:, None] * 2 - 1),
        patient_ids=arrays.patient_ids,
        site=arrays.site,
        age_group=arrays.age_group,
        sex=arrays.sex,
        split=arrays.split,
    )


@pytest.mark.slow
def test_verifier_reidentifies_held_out_patients_from_anatomy():
    torch.set_num_threads(2)
    data = labelled(SMALL)
    train = data.select(data.split == "train")
    held_out = data.select(data.split != "train")  # val + test: patients the verifier never saw
    assert not set(train.patient_ids) & set(held_out.patient_ids)
    verifier = train_verifier_on(train, steps=350, seed=0)
    auc = verification_auc(verifier, held_out, n_pairs=2000, seed=1)
    within_site = verification_auc(verifier, held_out, n_pairs=2000, seed=2, within_site=True)
    trivial = global_cue_auc(held_out, n_pairs=2000, seed=3)
    assert auc >= 0.9, auc
    assert within_site >= 0.85, within_site  # not just telling hospitals apart
    assert trivial < auc - 0.15, (trivial, auc)  # identity is not a global grey-level cue
    assert np.isfinite([auc, within_site, trivial]).all()
