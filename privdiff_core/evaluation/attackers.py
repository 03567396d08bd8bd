"""Training the attackers and judges: the Siamese verifier, the diagnosis classifier and the
demographic (age-group + sex) classifier.

One loop (`privdiff_core.fitting.fit`, here with an `AttackerSettings` budget) trains them all:
fresh random batches each step, AdamW with cosine decay, and the checkpoint with the best
*validation* score kept (validation patients are disjoint from the test patients, so choosing the
checkpoint on them is fair and makes the attacker as strong as its budget allows). The verifier
builds on `privdiff_core.verification` (same balanced pairs, same network and scoring); what it
adds is backbone widths, a warm start from another verifier (the adaptive attacker starts from
the real-trained one), and validation-based selection.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F

from privdiff_core.attributes import NUM_AGE_GROUPS, NUM_FINDINGS, NUM_SEXES
from privdiff_core.fitting import FitBudget, FitLog, fit
from privdiff_core.nets import ImageClassifier, SiameseVerifier, finding_pos_weight, jitter
from privdiff_core.verification import embed_all, make_pairs, pair_scores

from .metrics import accuracy_vs_chance, per_finding_auc


@dataclass
class AttackerSettings(FitBudget):
    """Network and budget of one attacker (the `evaluate.verifier` / `evaluate.classifier` sections)."""

    backbone: str = "small"
    embed_dim: int = 128
    widths: tuple[int, ...] | None = None
    batch_size: int = 32
    augment: bool = False  # diagnosis judge: random shifts and exposure changes of each training batch

    @classmethod
    def from_config(cls, section, **overrides) -> AttackerSettings:
        values = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
        if values.get("widths") is not None:
            values["widths"] = tuple(int(w) for w in values["widths"])
        values.update(overrides)
        return cls(**values)


# ---------------------------------------------------------------- re-identification (verifier)


def build_verifier(settings: AttackerSettings) -> SiameseVerifier:
    return SiameseVerifier(settings.backbone, settings.embed_dim, settings.widths)


def train_verifier_attacker(
    first: torch.Tensor,
    second: torch.Tensor,
    patient_ids: tuple[str, ...],
    settings: AttackerSettings,
    val: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None = None,
    init: SiameseVerifier | None = None,
    device: str | torch.device = "cpu",
    desc: str = "verifier",
    progress: bool = True,
) -> tuple[SiameseVerifier, FitLog]:
    """A Siamese verifier (BCE on balanced same/different-patient pairs, |e1 - e2| -> logit).

    Pair (i, j): image i from `first`, image j from `second` (aligned with `first`). For the
    real-image verifier both are the real images; for the adaptive linkage attacker `first`
    holds the anonymized images and `second` the originals, exactly the test-time situation.
    `val` = (first, second, pairs) of the validation patients; `init` warm-starts the weights.
    """
    if first.shape != second.shape:
        raise ValueError("the second images must be aligned with the first (same shape)")
    if len(patient_ids) != len(first):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(first)} images")
    torch.manual_seed(settings.seed)  # the initial weights too: else they depend on what ran before
    model = build_verifier(settings) if init is None else copy.deepcopy(init)
    model.to(device)
    loss_fn = nn.BCEWithLogitsLoss()

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        pairs = torch.from_numpy(make_pairs(patient_ids, settings.batch_size, rng))
        logits = model(first[pairs[:, 0]].to(device), second[pairs[:, 1]].to(device))
        return loss_fn(logits, pairs[:, 2].float().to(device))

    validate = None
    if val is not None:
        v_first, v_second, v_pairs = val

        def validate() -> float:
            return float(
                roc_auc_score(v_pairs[:, 2], pair_scores(model, v_first, v_second, v_pairs, device=device))
            )

    log = fit(model, batch_loss, settings, validate, desc=desc, progress=progress)
    return model.cpu(), log


def verifier_scores(
    model: SiameseVerifier, first: torch.Tensor, second: torch.Tensor, pairs: np.ndarray, device="cpu"
) -> np.ndarray:
    """Same-patient probabilities for pairs (i from `first`, j from `second`)."""
    return pair_scores(model.to(device), first, second, pairs, device=device)


# ---------------------------------------------------------------- diagnosis and demographics


def build_diagnosis(settings: AttackerSettings) -> ImageClassifier:
    return ImageClassifier(NUM_FINDINGS, settings.backbone, settings.embed_dim, settings.widths)


def build_demographics(settings: AttackerSettings) -> ImageClassifier:
    """One network, two heads: logits[:, :4] age group, logits[:, 4:] sex."""
    return ImageClassifier(NUM_AGE_GROUPS + NUM_SEXES, settings.backbone, settings.embed_dim, settings.widths)


@torch.no_grad()
def predict(
    model: ImageClassifier, images: torch.Tensor, batch_size: int = 256, device="cpu"
) -> torch.Tensor:
    """Logits of all images, batched."""
    model.eval().to(device)
    return torch.cat(
        [model(images[k : k + batch_size].to(device)).cpu() for k in range(0, len(images), batch_size)]
    )


def diagnosis_report(model: ImageClassifier, images, labels, label_mask, device="cpu") -> dict:
    probs = torch.sigmoid(predict(model, images, device=device)).numpy()
    return per_finding_auc(labels.numpy(), label_mask.numpy(), probs)


# The demographic network's two heads: (logit columns, classes).
DEMOGRAPHIC_HEADS = {
    "age": (slice(0, NUM_AGE_GROUPS), NUM_AGE_GROUPS),
    "sex": (slice(NUM_AGE_GROUPS, NUM_AGE_GROUPS + NUM_SEXES), NUM_SEXES),
}


def demographics_report(
    model: ImageClassifier,
    images,
    age_group,
    sex,
    train_age_group,
    train_sex,
    device="cpu",
    fixed_answers: Mapping[str, int] | None = None,
) -> dict:
    """Age-group and sex accuracy beside chance (the commonest class of the attacker's training
    films, `train_age_group` / `train_sex`); a head named in `fixed_answers` answers that class for
    every film (`commonest_where_better`)."""
    logits = predict(model, images, device=device)
    fixed_answers = fixed_answers or {}
    report = {}
    for name, targets, train_targets in (("age", age_group, train_age_group), ("sex", sex, train_sex)):
        columns, classes = DEMOGRAPHIC_HEADS[name]
        answers = logits[:, columns].argmax(1).numpy()
        if name in fixed_answers:
            answers = np.full_like(answers, fixed_answers[name])
        report[name] = accuracy_vs_chance(targets.numpy(), answers, classes, train_targets.numpy())
    return report


def commonest_where_better(
    model: ImageClassifier,
    age_group: torch.Tensor,
    sex: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    device: str | torch.device = "cpu",
) -> dict[str, int]:
    """{head: class} for the heads where always answering the commonest class of the attacker's
    training films (`age_group`, `sex`) is right more often on the validation films `val`
    (images, age group, sex) than the trained head.

    An attacker that cannot read an attribute should score chance, not below it. A head trained on
    films that do not show the attribute still answers each class about as often as it occurs
    (it learns the training patients, not the attribute), which scores sum p^2 (0.31 on the demo's
    age groups, where the commonest is 0.38), and the checkpoint is chosen on both heads together.
    So the attacker chooses between its head and the constant answer on validation films, as it
    chooses its checkpoint (validation patients are not test patients). A tie keeps the head.
    """
    on_val = demographics_report(model, *val, age_group, sex, device=device)
    return {
        name: result["chance_class"]
        for name, result in on_val.items()
        if result["accuracy"] is not None and result["chance"] > result["accuracy"]
    }


def _sample(n: int, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, n, min(batch_size, n)))


def train_diagnosis(
    images: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
    settings: AttackerSettings,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    desc: str = "diagnosis",
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[ImageClassifier, FitLog]:
    """Multi-label findings classifier; unknown (masked) labels contribute nothing to the loss.

    Findings are rare (a few percent of films each), so positives are up-weighted
    (`finding_pos_weight`): without it the network learns to answer "absent" for the rare ones.
    """
    torch.manual_seed(settings.seed)  # the initial weights too: else they depend on what ran before
    model = build_diagnosis(settings).to(device)
    pos_weight = finding_pos_weight(labels, label_mask).to(device)

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        idx = _sample(len(images), settings.batch_size, rng)
        mask = label_mask[idx].float().to(device)
        batch = jitter(images[idx], rng) if settings.augment else images[idx]
        per_label = F.binary_cross_entropy_with_logits(
            model(batch.to(device)), labels[idx].to(device), reduction="none", pos_weight=pos_weight
        )
        return (per_label * mask).sum() / mask.sum().clamp(min=1.0)

    validate = None
    if val is not None:

        def validate() -> float:
            mean = diagnosis_report(model, *val, device=device)["mean_auc"]
            return 0.0 if mean is None else mean

    log = fit(model, batch_loss, settings, validate, desc=desc, progress=progress, on_progress=on_progress)
    return model.cpu(), log


def train_demographics(
    images: torch.Tensor,
    age_group: torch.Tensor,
    sex: torch.Tensor,
    settings: AttackerSettings,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    init: ImageClassifier | None = None,
    device: str | torch.device = "cpu",
    desc: str = "age+sex",
    progress: bool = True,
) -> tuple[ImageClassifier, FitLog]:
    """Age-group and sex attacker: cross-entropy per head, unknown (-1) targets ignored."""
    torch.manual_seed(settings.seed)  # the initial weights too: else they depend on what ran before
    model = (build_demographics(settings) if init is None else copy.deepcopy(init)).to(device)

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        idx = _sample(len(images), settings.batch_size, rng)
        logits = model(images[idx].to(device))
        age_t, sex_t = age_group[idx].to(device), sex[idx].to(device)
        loss = logits.sum() * 0.0  # keeps a graph when a batch has no known target
        if (age_t >= 0).any():
            loss = loss + F.cross_entropy(logits[:, :NUM_AGE_GROUPS], age_t, ignore_index=-1)
        if (sex_t >= 0).any():
            loss = loss + F.cross_entropy(logits[:, NUM_AGE_GROUPS:], sex_t, ignore_index=-1)
        return loss

    validate = None
    if val is not None:

        def validate() -> float:
            rep = demographics_report(model, *val, age_group, sex, device=device)
            accs = [r["accuracy"] for r in rep.values() if r["accuracy"] is not None]
            return float(np.mean(accs)) if accs else 0.0

    log = fit(model, batch_loss, settings, validate, desc=desc, progress=progress)
    return model.cpu(), log


def embeddings(model: nn.Module, images: torch.Tensor, device="cpu") -> np.ndarray:
    """Backbone embeddings (for the Fréchet distance and the t-SNE figure)."""
    return embed_all(model.to(device), images, device=device).numpy()
