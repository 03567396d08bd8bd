"""Patient verification: balanced same/different-patient pairs and a Siamese verifier trained on them.

Used three ways: to prove the synthetic data carries biometrics, as the re-identification
attacker of the evaluation, and as the site's residual-risk check before a release.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from privdiff_core.fitting import FitBudget, fit
from privdiff_core.nets import SiameseVerifier


def make_pairs(patient_ids: Sequence[str], n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """`n_pairs` balanced pairs of sample indices as rows (i, j, same_patient).

    Positives are two different images of one patient; negatives are images of two different
    patients. Half of the pairs are positive (the first half, rounded up).
    """
    by_patient: dict[str, list[int]] = defaultdict(list)
    for index, pid in enumerate(patient_ids):
        by_patient[pid].append(index)
    repeated = [idx for idx in by_patient.values() if len(idx) >= 2]
    patients = list(by_patient.values())
    if not repeated:
        raise ValueError("positive pairs need at least one patient with two or more images")
    if len(patients) < 2:
        raise ValueError("negative pairs need at least two patients")
    n_pos = (n_pairs + 1) // 2
    pairs = np.empty((n_pairs, 3), dtype=np.int64)
    for k in range(n_pairs):
        if k < n_pos:
            images = repeated[rng.integers(len(repeated))]
            i, j = rng.choice(len(images), size=2, replace=False)
            pairs[k] = (images[i], images[j], 1)
        else:
            a, b = rng.choice(len(patients), size=2, replace=False)
            pairs[k] = (rng.choice(patients[a]), rng.choice(patients[b]), 0)
    return pairs


@dataclass
class VerifierTraining(FitBudget):
    """Settings for `train_verifier` (the `verifier` sections of the configs)."""

    backbone: str = "small"
    embed_dim: int = 128
    widths: tuple[int, ...] | None = None  # small backbone: a stride-2 block each (None: nets.py's)
    steps: int = 1000
    batch_size: int = 32


def train_verifier(
    images: torch.Tensor,
    patient_ids: Sequence[str],
    settings: VerifierTraining,
    images_second: torch.Tensor | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> SiameseVerifier:
    """Train a Siamese verifier with BCE on freshly drawn balanced pairs every step.

    `images_second`, when given, is aligned with `images` and supplies the second image of each
    pair: that is how the adaptive attacker learns to link an anonymized image (first) to an
    original (second). By default both come from `images`.
    """
    second = images if images_second is None else images_second
    if second.shape != images.shape:
        raise ValueError("images_second must be aligned with images (same shape)")
    if len(patient_ids) != len(images):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(images)} images")
    torch.manual_seed(settings.seed)  # the initial weights too: else they depend on what ran before
    model = SiameseVerifier(settings.backbone, settings.embed_dim, settings.widths).to(device)
    loss_fn = nn.BCEWithLogitsLoss()

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        pairs = torch.from_numpy(make_pairs(patient_ids, settings.batch_size, rng))
        logits = model(images[pairs[:, 0]].to(device), second[pairs[:, 1]].to(device))
        return loss_fn(logits, pairs[:, 2].float().to(device))

    fit(
        model, batch_loss, settings, cosine=False, desc="verifier", progress=progress, on_progress=on_progress
    )
    return model


@torch.no_grad()
def pair_scores(
    model: SiameseVerifier,
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    pairs: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Same-patient probability for each pair row (i from images_a, j from images_b)."""
    model.eval()
    emb_a = embed_all(model, images_a, batch_size, device)
    emb_b = embed_all(model, images_b, batch_size, device)
    i, j = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    logits = model.head((emb_a[i] - emb_b[j]).abs()).squeeze(-1)
    return torch.sigmoid(logits).numpy()


@torch.no_grad()
def embed_all(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu"
):
    """Embeddings of all images, batched, on the CPU."""
    model.eval()
    return torch.cat(
        [model.embed(images[k : k + batch_size].to(device)).cpu() for k in range(0, len(images), batch_size)]
    )
