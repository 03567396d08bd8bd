"""The data carries chest biometrics: a small verifier re-identifies held-out patients.

A reduced version of benchmarks/biometrics.py (which runs the demo scale and reports >= 0.95):
fewer patients and smaller films so that it trains in a few minutes of CPU. The verifier is
trained the way `privdiff evaluate` trains its attacker (cosine learning-rate decay).
One short training swings by ~0.05 with the thread count (different reduction orders), so the
test runs on one thread, which makes it reproducible on a given platform. Measured (generator
1.1, 1 thread): pooled AUC 0.930, within-site 0.820, grey-level control 0.720; with 2 threads one
run gave 0.875 pooled. The bounds leave a margin for that noise.
"""

import numpy as np
import pytest
import torch

from privdiff_core.evaluation.attackers import AttackerSettings, train_verifier_attacker
from privdiff_core.synth import SynthParams, generate_arrays
from privdiff_core.synth.biometrics import (
    LabelledImages,
    global_cue_auc,
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
def test_verifier_reidentifies_held_out_patients_from_anatomy(one_thread):
    data = labelled(SMALL)
    train = data.select(data.split == "train")
    held_out = data.select(data.split != "train")  # val + test: patients the verifier never saw
    assert not set(train.patient_ids) & set(held_out.patient_ids)
    settings = AttackerSettings(backbone="small", embed_dim=128, steps=600, batch_size=32, lr=2e-3, seed=0)
    verifier, _ = train_verifier_attacker(
        train.images, train.images, tuple(train.patient_ids), settings, progress=False
    )
    auc = verification_auc(verifier, held_out, n_pairs=2000, seed=1)
    within_site = verification_auc(verifier, held_out, n_pairs=2000, seed=2, within_site=True)
    trivial = global_cue_auc(held_out, n_pairs=2000, seed=3)
    assert auc >= 0.85, auc
    assert within_site >= 0.72, within_site  # not just telling hospitals apart
    assert trivial < auc - 0.15, (trivial, auc)  # identity is not a global grey-level cue
    assert np.isfinite([auc, within_site, trivial]).all()
