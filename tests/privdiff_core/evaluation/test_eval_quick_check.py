"""The quick privacy/utility check of the validation gate (privdiff_core/evaluation/quick_check.py)."""

from __future__ import annotations

import numpy as np
import torch
from eval_toydata import synth_splits

from privdiff_core.evaluation.attackers import AttackerSettings, train_diagnosis
from privdiff_core.evaluation.quick_check import diagnosis_agreement, output_input_pairs, reid_auc
from privdiff_core.verification import VerifierTraining, train_verifier


def test_pairs_are_each_output_with_its_input_and_with_other_patients_inputs():
    pairs = output_input_pairs(["a", "a", "b"])
    assert {tuple(p) for p in pairs} == {
        (0, 0, 1),
        (1, 1, 1),
        (2, 2, 1),
        (0, 2, 0),
        (1, 2, 0),
        (2, 0, 0),
        (2, 1, 0),
    }


def test_outputs_equal_to_their_inputs_are_re_identified_and_agree_on_every_finding():
    """On synthetic phantoms of several patients, briefly trained judges score a do-nothing
    anonymizer as fully linkable (AUC ~1) and fully faithful; outputs made from other patients'
    films are not linked to the input."""
    films = synth_splits(sites=2, patients=8, images_per_patient=2).train
    images, ids = films.images, list(films.patient_ids)
    verifier = train_verifier(
        images, ids, VerifierTraining(embed_dim=16, steps=30, batch_size=16), progress=False
    )
    settings = AttackerSettings(embed_dim=16, widths=(16, 32), steps=15, batch_size=16)
    classifier, _ = train_diagnosis(images, films.labels, films.label_mask, settings, progress=False)
    assert reid_auc(verifier, images, images.clone(), ids) > 0.95
    assert diagnosis_agreement(classifier, images, images.clone()) == 1.0
    shuffled = images[torch.from_numpy(np.roll(np.arange(len(images)), len(images) // 2))]
    assert reid_auc(verifier, images, shuffled, ids) < 0.8
    assert reid_auc(verifier, images[:1], images[:1], ids[:1]) is None  # one patient: nothing to tell apart
