"""Does the synthetic data carry chest biometrics? The measurements behind benchmarks/biometrics.py.

A patient-verification attacker (a Siamese network, Packhaeuser et al. 2022, as in the paper) is
trained on the train-split patients and scored on pairs of held-out test patients; age-group and
sex classifiers are trained and tested the same way. Two controls check that identity lives in
the anatomy rather than in a trivial global cue: a "verifier" that compares only each film's
grey-level statistics (mean, spread, quantiles), and the real verifier re-trained on films whose
brightness and contrast were normalised away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from privdiff_core.evaluation.metrics import balanced_accuracy
from privdiff_core.fitting import FitBudget, fit
from privdiff_core.nets import ImageClassifier
from privdiff_core.verification import VerifierTraining, make_pairs, pair_scores, train_verifier


@dataclass
class LabelledImages:
    """Films with what an attacker would want to learn from them."""

    images: torch.Tensor  # (N, 1, S, S) float32 in [-1, 1], bone bright
    patient_ids: list[str]
    site: np.ndarray  # (N,) int
    age_group: np.ndarray  # (N,) int
    sex: np.ndarray  # (N,) int
    split: np.ndarray  # (N,) str

    def select(self, mask: np.ndarray) -> LabelledImages:
        index = np.flatnonzero(mask)
        return LabelledImages(
            images=self.images[torch.from_numpy(index)],
            patient_ids=[self.patient_ids[i] for i in index],
            site=self.site[index],
            age_group=self.age_group[index],
            sex=self.sex[index],
            split=self.split[index],
        )


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Each film to zero mean and unit spread: removes exposure, brightness and contrast."""
    flat = images.flatten(1)
    mean, std = flat.mean(1), flat.std(1).clamp_min(1e-6)
    return (images - mean[:, None, None, None]) / std[:, None, None, None]


def verification_auc(
    model: nn.Module, data: LabelledImages, n_pairs: int, seed: int, within_site: bool = False
) -> float:
    """ROC AUC of same-patient scores on balanced pairs of `data`'s films.

    With `within_site`, negatives pair two patients of the same hospital, so the scanner's
    look cannot separate them.
    """
    rng = np.random.default_rng(seed)
    if not within_site:
        pairs = make_pairs(data.patient_ids, n_pairs, rng)
        return float(roc_auc_score(pairs[:, 2], pair_scores(model, data.images, data.images, pairs)))
    labels, scores = [], []
    sites = np.unique(data.site)
    for site in sites:
        part = data.select(data.site == site)
        pairs = make_pairs(part.patient_ids, n_pairs // len(sites), rng)
        labels.append(pairs[:, 2])
        scores.append(pair_scores(model, part.images, part.images, pairs))
    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))


def grey_statistics(images: torch.Tensor) -> np.ndarray:
    """Global grey-level statistics of each film: mean, spread and nine quantiles."""
    flat = images.flatten(1).double()
    quantiles = torch.quantile(flat, torch.linspace(0.1, 0.9, 9, dtype=flat.dtype), dim=1).T
    return torch.cat([flat.mean(1, keepdim=True), flat.std(1, keepdim=True), quantiles], 1).numpy()


def global_cue_auc(data: LabelledImages, n_pairs: int, seed: int) -> float:
    """AUC of the best trivial attacker: same patient if the grey-level statistics are close."""
    stats = grey_statistics(data.images)
    stats = (stats - stats.mean(0)) / (stats.std(0) + 1e-9)
    pairs = make_pairs(data.patient_ids, n_pairs, np.random.default_rng(seed))
    distance = np.linalg.norm(stats[pairs[:, 0]] - stats[pairs[:, 1]], axis=1)
    return float(roc_auc_score(pairs[:, 2], -distance))


def train_verifier_on(data: LabelledImages, steps: int, seed: int, progress: bool = False) -> nn.Module:
    """The paper's attacker: a small Siamese verifier on balanced pairs (privdiff_core.verification)."""
    settings = VerifierTraining(
        backbone="small", embed_dim=128, steps=steps, batch_size=32, lr=1e-3, seed=seed
    )
    return train_verifier(data.images, data.patient_ids, settings, progress=progress)


def train_classifier(
    images: torch.Tensor,
    targets: np.ndarray,
    num_classes: int,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    progress: bool = False,
) -> ImageClassifier:
    """An age-group or sex attacker: `nets.ImageClassifier` with cross-entropy, class-balanced batches."""
    torch.manual_seed(seed)  # the initial weights too: else they depend on what ran before
    model = ImageClassifier(num_classes)
    by_class = [np.flatnonzero(targets == c) for c in range(num_classes)]
    present = [idx for idx in by_class if len(idx)]
    target_tensor = torch.as_tensor(targets, dtype=torch.long)

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        # Balanced batches: the majority class cannot win by being frequent.
        classes = rng.integers(len(present), size=batch_size)
        index = torch.from_numpy(np.array([rng.choice(present[c]) for c in classes]))
        return nn.functional.cross_entropy(model(images[index]), target_tensor[index])

    budget = FitBudget(steps=steps, lr=lr, weight_decay=1e-4, seed=seed)
    fit(model, batch_loss, budget, cosine=False, desc="classifier", progress=progress)
    return model


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, targets: np.ndarray) -> tuple[float, float]:
    """(accuracy, balanced accuracy) on `images`."""
    predicted = torch.cat([model(images[k : k + 256]).argmax(1) for k in range(0, len(images), 256)]).numpy()
    return float((predicted == targets).mean()), balanced_accuracy(targets, predicted)


def chance_levels(targets: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(majority-class accuracy, balanced-accuracy chance) for the test targets."""
    counts = np.bincount(targets, minlength=num_classes)
    return float(counts.max() / counts.sum()), 1.0 / int((counts > 0).sum())


def summarize(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)
