"""The one training loop (`privdiff_core.fitting.fit`) behind every attacker and judge network:
the same seeds give the same weights as the three loops it replaced (pinned on main before the
change), the best validated checkpoint is kept, and patience stops a run early."""

import numpy as np
import pytest
import torch
from pinned_values import assert_weights_pinned
from torch import nn

from privdiff_core import verification
from privdiff_core.evaluation import attackers
from privdiff_core.fitting import FitBudget, fit
from privdiff_core.synth import SynthParams, biometrics, generate_arrays

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# The trained weights of every network below, pinned in tests/fixtures/pinned/fitting_{name}.json
# (pinned_values.py: a fingerprint per tensor, to 1% of its RMS): first as hashes from the separate
# loops on main before they became one, stored as fingerprints when an AVX-512 CI machine's last
# bits differed (re-pinned from `fit`, which gave the old hashes on the machines they came from).
NETWORKS = (
    "verification.train_verifier",
    "biometrics.train_classifier",
    "attackers.verifier",
    "attackers.diagnosis",
    "attackers.demographics",
)


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
    assert tuple(got) == NETWORKS
    assert_weights_pinned({f"fitting_{name}": model for name, model in got.items()})


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
