"""Linkage measurements beyond the balanced-pair AUC: hard negatives, retrieval, memorization.

- Hard negatives. A random negative pair often shows two patients of different sex, age or
  hospital, which any attacker tells apart without biometrics. Matched negatives (other patient,
  same sex, age group and site as the anonymized film) leave the attacker only the person.
- Retrieval precision@1. The attacker ranks a gallery (all real test films but the query's own
  original) for each anonymized test film; a hit is when its top film shows the same patient.
  Chance is the share of the gallery that does.
- Memorization. A generated film must not be a copy of a *training* patient (a federation
  model can memorise another site's patients). Each anonymized test film is scored by the
  real-trained verifier against every training film: its best same-patient score (the head's
  closeness evidence only, `closeness_head`) and its nearest distance in the verifier's
  embedding space. It counts as memorized when either
  crosses a threshold that real *validation* films (patients no model saw, so every hit is a
  false alarm) cross against the same training films at rate fpr/2 each (<= fpr together).
  Thresholds are set per film over the whole gallery, not per pair: with thousands of training
  films, a per-pair threshold would flag nearly every film by chance.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from privdiff_core.nets import SiameseVerifier
from privdiff_core.verification import embed_all

from .protocol import Cohort

MEMORIZATION_FPR = 0.01  # false alarms of real validation films at the memorization threshold


def site_of(patient_id: str) -> str:
    """The site folder a pooled patient id starts with ('site_01/0212345' -> 'site_01'); '' if none."""
    site, sep, _ = patient_id.rpartition("/")
    return site if sep else ""


def hard_negative_pairs(cohort: Cohort, pairs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The positive rows of `pairs` and, per positive (i, j), one negative (i, k): k is a film of
    another patient with the same sex, age group and site as film i. Positives whose film i has
    no such match are left out together with their negative (rows i, j, same)."""
    sex, age = cohort.sex.tolist(), cohort.age_group.tolist()
    key = [(sex[n], age[n], site_of(p)) for n, p in enumerate(cohort.patient_ids)]
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for n, k in enumerate(key):
        by_key[k].append(n)
    positives, negatives = [], []
    for i, j, same in pairs.tolist():
        if not same:
            continue
        candidates = [n for n in by_key[key[i]] if cohort.patient_ids[n] != cohort.patient_ids[i]]
        if candidates:
            positives.append((i, j, 1))
            negatives.append((i, candidates[int(rng.integers(len(candidates)))], 0))
    return np.asarray(positives + negatives, dtype=np.int64).reshape(-1, 3)


def _embed_pair(verifier: SiameseVerifier, first: torch.Tensor, second: torch.Tensor, device):
    verifier = verifier.to(device).eval()
    return embed_all(verifier, first, device=device), embed_all(verifier, second, device=device)


@torch.no_grad()
def head_matrix(
    verifier: SiameseVerifier,
    emb_a: torch.Tensor,
    emb_b: torch.Tensor,
    device="cpu",
    budget: int = 1 << 23,
    closeness: bool = False,
) -> torch.Tensor:
    """Same-patient probability of every (a, b) embedding pair as an (A, B) matrix; `budget`
    bounds the elements of one chunk's |e_a - e_b| tensor (memory, whatever the gallery size).

    closeness: read only the head's evidence that grows as the pair comes closer, i.e. its linear
    layer on |e_a - e_b| with the positive weights set to zero (`closeness_head`): a score that can
    only fall as any embedding coordinate moves apart, highest for a copy."""
    head = closeness_head(verifier.head) if closeness else verifier.head
    chunk = max(1, budget // max(1, emb_b.numel()))
    rows = []
    for k in range(0, len(emb_a), chunk):
        diff = (emb_a[k : k + chunk, None, :] - emb_b[None, :, :]).abs()
        rows.append(torch.sigmoid(head(diff.to(device)).squeeze(-1)).cpu())
    return torch.cat(rows)


def closeness_head(head: nn.Linear) -> nn.Linear:
    """A copy of a verifier's linear head on |e1 - e2| without its positive weights.

    A trained head gives ~40% of its weights a positive sign (the demo's judges: 22-26 of 64):
    there, a LARGER difference reads as the same patient. Between real films that is part of
    what it learned; off their distribution it is not: a film whose embedding lies far from every
    training film in those coordinates scores ~1 against them (DP-Pix's noisy blocks: 56-64% of
    its films above the memorization threshold with one judge, nearest embedding distance >= 0.33
    against the threshold's 0.06). Without them the score is monotone in closeness, and on real
    unseen test pairs it tells patients apart better than the whole head (AUC 0.911-0.928 against
    0.851-0.895, three judges; benchmarks/results/memorization_score_rule.md)."""
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise TypeError(f"the closeness reading needs the verifier's one-logit linear head, got {head!r}")
    closeness = nn.Linear(head.in_features, 1, bias=head.bias is not None).to(head.weight)
    with torch.no_grad():
        closeness.weight.copy_(head.weight.clamp(max=0.0))
        if head.bias is not None:
            closeness.bias.copy_(head.bias)
    return closeness


def _score_matrix(
    verifier: SiameseVerifier, first: torch.Tensor, second: torch.Tensor, device
) -> torch.Tensor:
    return head_matrix(verifier, *_embed_pair(verifier, first, second, device), device)


def retrieval_at_1(
    verifier: SiameseVerifier, queries: torch.Tensor, gallery: torch.Tensor, patient_ids, device="cpu"
) -> dict:
    """Precision@1 of each query (anonymized test film n) against the real test films but film n
    itself; only queries whose patient has another film in the gallery count."""
    ids = np.asarray(patient_ids)
    same = ids[:, None] == ids[None, :]
    np.fill_diagonal(same, False)
    usable = same.any(1)
    if not usable.any():
        return {"precision_at_1": None, "chance": None, "queries": 0}
    scores = _score_matrix(verifier, queries, gallery, device).numpy()
    np.fill_diagonal(scores, -np.inf)  # the query's own original is not in its gallery
    top = scores.argmax(1)
    hits = same[np.arange(len(ids)), top][usable]
    chance = (same.sum(1) / (len(ids) - 1))[usable]
    return {
        "precision_at_1": float(hits.mean()),
        "chance": float(chance.mean()),
        "queries": int(usable.sum()),
    }


@torch.no_grad()
def gallery_match(
    verifier: SiameseVerifier, films: torch.Tensor, gallery: torch.Tensor, device="cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Per film: its highest same-patient probability against any gallery film, read as
    closeness (`closeness_head`: monotone, so a film unlike any real one cannot score high), and
    the distance to its nearest gallery film in the verifier's embedding space.

    Both, because the verifier never saw a film paired with itself in training (positives are two
    different films of a patient): its head weighs the embedding's coordinates, the distance
    treats them alike; a copy is at distance 0 and has the highest closeness score.
    """
    return match_embeddings(verifier, *_embed_pair(verifier, films, gallery, device), device)


def match_embeddings(
    verifier: SiameseVerifier, emb_films: torch.Tensor, emb_gallery: torch.Tensor, device="cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """`gallery_match` on embeddings already computed (a gallery embedded once, matched often)."""
    best = head_matrix(verifier, emb_films, emb_gallery, device, closeness=True).max(1).values.numpy()
    nearest = torch.cdist(emb_films, emb_gallery).min(1).values.numpy()
    return best, nearest


def memorization_threshold(
    verifier: SiameseVerifier, val_images: torch.Tensor, train_images: torch.Tensor, fpr: float, device="cpu"
) -> dict:
    """Thresholds that real validation films cross against the training films with rate <= `fpr`:
    a best score that only fpr/2 of them exceed, a nearest distance that only fpr/2 undercut."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"the memorization false-positive rate must lie in (0, 1), got {fpr}")
    best, nearest = gallery_match(verifier, val_images, train_images, device)
    score, distance = false_match_thresholds(best, nearest, fpr)
    return {"score": score, "distance": distance, "fpr": fpr, "validation_films": int(len(best))}


def false_match_thresholds(best: np.ndarray, nearest: np.ndarray, fpr: float) -> tuple[float, float]:
    """(score, distance) that films known to match no one cross at rate fpr/2 each, <= fpr together:
    the best score only fpr/2 of them exceed, the nearest distance only fpr/2 of them undercut.
    `best` / `nearest`: each such film's best score and nearest distance (`gallery_match`)."""
    return float(np.quantile(best, 1.0 - fpr / 2)), float(np.quantile(nearest, fpr / 2))


def memorization_rules(
    best: np.ndarray, nearest: np.ndarray, threshold: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Per film, whether each rule fires: (best score above the threshold's, nearest distance below
    its). A film is memorized when either does (`memorization_flags`)."""
    return best > threshold["score"], nearest < threshold["distance"]


def memorization_flags(
    verifier: SiameseVerifier,
    films: torch.Tensor,
    train_images: torch.Tensor,
    threshold: dict,
    device="cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged, best score, nearest distance) per film: flagged where it matches a training film
    beyond `threshold` (score above or distance below; `memorization_threshold`)."""
    best, nearest = gallery_match(verifier, films, train_images, device)
    by_score, by_distance = memorization_rules(best, nearest, threshold)
    return by_score | by_distance, best, nearest


def memorization_rate(
    verifier: SiameseVerifier,
    films: torch.Tensor,
    train_images: torch.Tensor,
    threshold: dict,
    device="cpu",
) -> dict:
    """Share of `films` that match a training film beyond `threshold` (`memorization_flags`)."""
    flagged, best, nearest = memorization_flags(verifier, films, train_images, threshold, device)
    return {
        "rate": float(flagged.mean()),
        "threshold": threshold,
        "films": int(len(best)),
        "max_score": float(best.max()),
        "min_distance": float(nearest.min()),
    }
