"""Hard negatives, retrieval precision@1 and the memorization thresholds on known answers."""

import numpy as np
import pytest
import torch
from eval_toydata import synth_splits
from torch import nn

from privdiff_core.evaluation.linkage import (
    closeness_head,
    gallery_match,
    hard_negative_pairs,
    head_matrix,
    memorization_flags,
    memorization_rate,
    memorization_threshold,
    retrieval_at_1,
    site_of,
)
from privdiff_core.verification import make_pairs


class PixelVerifier(nn.Module):
    """A verifier that knows its answer: embeddings are the pixels, same patient = small distance
    (its linear head: -20 x the mean absolute pixel difference)."""

    def __init__(self, pixels: int = 32 * 32):
        super().__init__()
        self.head = nn.Linear(pixels, 1)
        with torch.no_grad():
            self.head.weight.fill_(-20.0 / pixels)
            self.head.bias.zero_()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.fixture(scope="module")
def test_cohort():
    return synth_splits(sites=2, patients=40, images_per_patient=3, size=32).test


def test_hard_negatives_share_sex_age_group_and_site_but_not_the_patient(test_cohort):
    pairs = make_pairs(test_cohort.patient_ids, 400, np.random.default_rng(0))
    hard = hard_negative_pairs(test_cohort, pairs, np.random.default_rng(1))
    ids, sex, age = test_cohort.patient_ids, test_cohort.sex, test_cohort.age_group
    positives, negatives = hard[hard[:, 2] == 1], hard[hard[:, 2] == 0]
    assert len(positives) == len(negatives) > 0
    assert {tuple(r) for r in positives.tolist()} <= {tuple(r) for r in pairs[pairs[:, 2] == 1].tolist()}
    for i, j, _ in negatives.tolist():
        assert ids[i] != ids[j] and sex[i] == sex[j] and age[i] == age[j]
        assert site_of(ids[i]) == site_of(ids[j]) != ""
    for i, j, _ in positives.tolist():
        assert ids[i] == ids[j] and i != j


def test_a_film_without_a_matched_patient_is_left_out(test_cohort):
    lonely = test_cohort.subset(range(3))  # one patient's films only: nobody to match
    pairs = np.array([[0, 1, 1], [1, 2, 1], [0, 2, 0]])
    assert hard_negative_pairs(lonely, pairs, np.random.default_rng(0)).shape == (0, 3)


def test_retrieval_finds_the_patient_of_real_films_and_not_of_noise(test_cohort):
    images, ids = test_cohort.images, test_cohort.patient_ids
    real = retrieval_at_1(PixelVerifier(), images, images, ids)
    noise = retrieval_at_1(PixelVerifier(), torch.rand_like(images) * 2 - 1, images, ids)
    assert real["queries"] == len(images) and 0 < real["chance"] < 0.1
    assert real["precision_at_1"] > 0.5 > noise["precision_at_1"]


def test_copies_of_training_films_are_memorized_and_new_films_are_not(test_cohort):
    splits = synth_splits(sites=2, patients=40, images_per_patient=3, size=32)
    verifier = PixelVerifier()
    threshold = memorization_threshold(verifier, splits.val.images, splits.train.images, 0.02)
    assert threshold["validation_films"] == len(splits.val) and threshold["fpr"] == 0.02
    copies = memorization_rate(verifier, splits.train.images[:30], splits.train.images, threshold)
    others = memorization_rate(verifier, splits.test.images, splits.train.images, threshold)
    assert copies["rate"] == 1.0 and copies["min_distance"] == 0.0
    assert others["rate"] < 0.1
    # The per-film flags behind the rate: a copy among new films is the one flagged.
    films = torch.cat([splits.test.images[:9], splits.train.images[:1]])
    flagged, best, nearest = memorization_flags(verifier, films, splits.train.images, threshold)
    assert flagged.shape == best.shape == nearest.shape == (10,)
    assert flagged[-1] and nearest[-1] == 0.0 and flagged.sum() <= 2
    with pytest.raises(ValueError, match="false-positive rate"):
        memorization_threshold(verifier, splits.val.images, splits.train.images, 0.0)


def test_the_memorization_score_only_falls_as_a_film_moves_away_from_its_nearest_training_film():
    """A trained head gives some coordinates a positive weight (a larger difference reads as the
    same patient); off the real films' distribution that scored DP-Pix noise as memorized. The
    gallery's score reads the head's closeness evidence only: a copy scores highest."""
    verifier = PixelVerifier(pixels=16)
    with torch.no_grad():
        verifier.head.weight.copy_(torch.tensor([[-2.0] * 8 + [1.0] * 8]))
        verifier.head.bias.fill_(1.0)
    copy_score = torch.sigmoid(torch.tensor(1.0)).item()
    gallery = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = []
    for step in (0.0, 0.5, 1.0, 2.0, 4.0):  # every pixel moves away from gallery film 0
        best, nearest = gallery_match(verifier, gallery[:1] + step, gallery)
        scores.append(float(best[0]))
        if step == 0.0:
            assert nearest[0] == 0.0 and best[0] == pytest.approx(copy_score)
    assert all(later <= earlier + 1e-7 for earlier, later in zip(scores, scores[1:], strict=False))
    assert scores[-1] < 0.01
    # Moved along the positive-weight pixels only, the whole head calls it the same patient for
    # sure; the gallery's score never exceeds a copy's.
    moved = gallery[:1] + 4.0 * torch.cat([torch.zeros(8), torch.ones(8)]).view(1, 1, 4, 4)
    assert head_matrix(verifier, moved.flatten(1), gallery[:1].flatten(1), "cpu")[0, 0] > 0.99
    assert gallery_match(verifier, moved, gallery)[0][0] <= copy_score + 1e-7


def test_the_closeness_head_keeps_the_negative_weights_and_the_bias():
    head = nn.Linear(4, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 2.0, -3.0, 0.5]]))
        head.bias.fill_(0.25)
    closeness = closeness_head(head)
    assert closeness.weight.tolist() == [[-1.0, 0.0, -3.0, 0.0]] and closeness.bias.item() == 0.25
    assert head.weight.tolist() == [[-1.0, 2.0, -3.0, 0.5]]  # the verifier's own head is untouched
    with pytest.raises(TypeError, match="linear head"):
        closeness_head(nn.Linear(4, 2))
