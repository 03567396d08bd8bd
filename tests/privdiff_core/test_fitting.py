"""The one training loop (`privdiff_core.fitting.fit`) behind every attacker and judge network:
the same seeds give the same weights as the three loops it replaced (hashes pinned on main before
the change), the best validated checkpoint is kept, and patience stops a run early."""

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from privdiff_core import verification
from privdiff_core.evaluation import attackers
from privdiff_core.fitting import FitBudget, fit
from privdiff_core.synth import SynthParams, biometrics, generate_arrays

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# sha256 of the trained state dicts (sorted keys, float32 bytes) from the separate loops on main
# before they became one (one torch thread, this project's x86-64 CPU machines).
PINNED_WEIGHTS = {
    "verification.train_verifier": "7d722049f334be8ae945e6605daa4403d07bb71c36c1b280054ebefb541b2285",
    "biometrics.train_classifier": "9f3c57cce7b0950c3da6938cec2f0f4583bd9a5fb8214389eb0129259cff6ded",
    "attackers.verifier": "a922a053cb22eef52467eed54a89ef1c126d05e404d8bd71579efb2c41f48b9e",
    "attackers.diagnosis": "1f54bec7886b37cc1eb687e2726bfe16ff8300ac057c4c5597580b82ef1141ed",
    "attackers.demographics": "029cd80f187b9c893770a4e2b9791bcd8c6a270e369545818f2597b64d04f51e",
}


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_every_network_trains_to_the_weights_of_the_loops_it_replaced():
    data = generate_arrays(
        SynthParams(sites=1, patients=6, images_per_patient=3, size=32, seed=0)
    ).to_tensors()
    x, pids = data.images, data.patient_ids
    got = {
        "verification.train_verifier": verification.train_verifier(
            x,
            pids,
            verification.VerifierTraining(embed_dim=16, steps=4, batch_size=8, seed=3),
            progress=False,
        ),
        "biometrics.train_classifier": biometrics.train_classifier(
            x, data.sex.numpy(), 2, steps=4, seed=3, batch_size=8, progress=False
        ),
    }
    settings = attackers.AttackerSettings(
        embed_dim=16, widths=(8, 16), steps=4, batch_size=8, eval_every=2, seed=3
    )
    val_pairs = verification.make_pairs(pids, 20, np.random.default_rng(0))
    model, log = attackers.train_verifier_attacker(
        x, x, tuple(pids), settings, val=(x, x, val_pairs), progress=False
    )
    got["attackers.verifier"] = model
    assert (log.best_step, log.best_val, log.steps_run) == (4, 0.85, 4)
    got["attackers.diagnosis"], _ = attackers.train_diagnosis(
        x, data.labels, data.label_mask, settings, progress=False
    )
    val = (x, data.age_group, data.sex)
    got["attackers.demographics"], _ = attackers.train_demographics(
        x, data.age_group, data.sex, settings, val=val, progress=False
    )
    assert {name: weights_hash(model) for name, model in got.items()} == PINNED_WEIGHTS


def test_fit_keeps_the_best_validated_weights_and_stops_on_patience():
    model = nn.Linear(1, 1, bias=False)
    target = torch.ones(8, 1)
    scores = iter([0.2, 0.9, 0.5, 0.4, 0.3, 0.1])
    kept = {}

    def validate() -> float:
        score = next(scores)
        kept[score] = model.weight.detach().clone()
        return score

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        return ((model(torch.ones(8, 1)) - target) ** 2).mean()

    budget = FitBudget(steps=12, lr=0.1, seed=0, eval_every=2, patience=3)
    log = fit(model, batch_loss, budget, validate, progress=False)
    assert (log.best_step, log.best_val, log.steps_run) == (4, 0.9, 10)
    assert torch.equal(model.weight, kept[0.9])
    assert len(log.losses) == 10 and not model.training
