"""The residual-risk verifier: saved and loaded exactly, scores in [0, 1] at any image size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from privdiff.client.residual_risk import ResidualRiskCheck, VerifierError, load_verifier, save_verifier
from privdiff_core.nets import SiameseVerifier


def test_saved_verifier_loads_with_the_same_scores(tmp_path):
    torch.manual_seed(0)
    model = SiameseVerifier("small", 16).eval()
    save_verifier(model, tmp_path, 32, "small", 16)
    loaded, size = load_verifier(tmp_path)
    a, b = torch.rand(3, 1, 32, 32) * 2 - 1, torch.rand(3, 1, 32, 32) * 2 - 1
    assert size == 32
    assert torch.equal(model(a, b), loaded(a, b))


def test_a_verifier_with_its_own_widths_loads_as_saved_and_old_folders_keep_the_default(tmp_path):
    torch.manual_seed(0)
    model = SiameseVerifier("small", 16, (8, 16)).eval()
    save_verifier(model, tmp_path, 32, "small", 16, (8, 16))
    loaded, _ = load_verifier(tmp_path)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(model(a, b), loaded(a, b))
    default = SiameseVerifier("small", 16).eval()
    save_verifier(default, tmp_path, 32, "small", 16)
    config = json.loads((tmp_path / "verifier.json").read_text())
    del config["widths"]  # written before widths were kept
    (tmp_path / "verifier.json").write_text(json.dumps(config))
    assert torch.equal(default(a, b), load_verifier(tmp_path)[0](a, b))


def test_scores_are_probabilities_and_other_sizes_are_resampled(tmp_path):
    check = ResidualRiskCheck(SiameseVerifier("small", 16).eval(), 32, "site verifier")
    originals = torch.rand(2, 1, 64, 64) * 2 - 1
    probabilities = check.same_patient_probability(originals, originals.flip(-1))
    assert probabilities.shape == (2,) and ((probabilities > 0) & (probabilities < 1)).all()


def test_incomplete_or_foreign_verifier_folders_are_refused(tmp_path):
    with pytest.raises(VerifierError, match="needs verifier.json"):
        load_verifier(tmp_path)
    save_verifier(SiameseVerifier("small", 16), tmp_path, 32, "small", 16)
    config = json.loads((tmp_path / "verifier.json").read_text())
    (tmp_path / "verifier.json").write_text(json.dumps({**config, "embed_dim": 8}))
    with pytest.raises(VerifierError, match="do not fit"):
        load_verifier(tmp_path)
    (tmp_path / "verifier.json").write_text(json.dumps({**config, "format": "something-else/1"}))
    with pytest.raises(VerifierError, match="format"):
        load_verifier(tmp_path)


def test_a_site_gallery_holds_back_copies_of_its_films_and_scores_the_rest(synthetic_federation, tmp_path):
    from privdiff.client.residual_risk import GalleryError, load_gallery
    from privdiff_core.data import open_dataset

    torch.manual_seed(0)
    verifier = SiameseVerifier("small", 16).eval()
    gallery = load_gallery(synthetic_federation, verifier, 32)
    films = open_dataset(synthetic_federation, 32, progress=False).load_tensors(progress=False).image
    assert len(gallery.images) == len(films) and gallery.copy_distance > 0
    plain = ResidualRiskCheck(verifier, 32, "site verifier")
    checked = ResidualRiskCheck(verifier, 32, "site verifier", gallery)
    inputs = torch.rand(4, 1, 32, 32) * 2 - 1
    copies = films[:4]
    assert (checked.same_patient_probability(inputs, copies) == 1.0).all()
    noise = torch.rand(4, 1, 32, 32) * 2 - 1
    raised, pair_only = (
        checked.same_patient_probability(inputs, noise),
        plain.same_patient_probability(inputs, noise),
    )
    assert (raised >= pair_only).all() and (raised < 1.0).all()
    with pytest.raises(GalleryError, match="cannot be read"):
        load_gallery(tmp_path, verifier, 32)


def test_the_gallery_score_counts_only_beyond_what_other_patients_films_reach(synthetic_federation):
    """A best score over many gallery films is no probability: the gallery calibrates its threshold
    on its own films' best matches among other patients, as the evaluation does on validation
    films. With a head that scores every pair above 0.5, outputs unlike any gallery film keep
    their pair score (the raw best would have held back every one); copies are still caught."""
    from privdiff.client.residual_risk import load_gallery
    from privdiff_core.data import open_dataset

    torch.manual_seed(0)
    verifier = SiameseVerifier("small", 16).eval()
    with torch.no_grad():
        verifier.head.bias.fill_(5.0)  # sigmoid(5) ~ 0.993: every pair reads "same patient"
    gallery = load_gallery(synthetic_federation, verifier, 32)
    films = open_dataset(synthetic_federation, 32, progress=False).load_tensors(progress=False).image
    assert 0.5 < gallery.score_threshold <= torch.sigmoid(torch.tensor(5.0)).item() + 1e-6
    plain = ResidualRiskCheck(verifier, 32, "site verifier")
    checked = ResidualRiskCheck(verifier, 32, "site verifier", gallery)
    inputs = torch.rand(6, 1, 32, 32) * 2 - 1
    noise = torch.rand(6, 1, 32, 32) * 2 - 1
    assert np.array_equal(
        checked.same_patient_probability(inputs, noise), plain.same_patient_probability(inputs, noise)
    )
    assert (checked.same_patient_probability(inputs, films[:6]) == 1.0).all()
