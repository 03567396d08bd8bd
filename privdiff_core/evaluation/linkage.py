"""Linkage measurements beyond the balanced-pair AUC: hard negatives, retrieval, memorization.

- Hard negatives. A random negative pair often shows two patients of different sex, age or
  hospital, which any attacker tells apart without biometrics. Matched negatives (other patient,
  same sex, age group and site as the anonymized film) leave the attacker only the person.
- Retrieval precision@1. The attacker ranks a gallery (all real test films but the query's own
  original) for each anonymized test film; a hit is when its top film shows the same patient.
  Chance is the share of the gallery that does.
- Memorization. A generated film must not be a copy of a *training* patient (a federation
  model can memorise another site's patients). Each anonymized test film is scored by the
  real-trained verifier against every training film; its best score is compared with a
  threshold at which only `fpr` of real *validation* films (patients the model never saw, so
  every hit is a false alarm) score that high against the same training gallery. The threshold
  is set per film over the whole gallery, not per pair: with thousands of training films, a
  per-pair threshold would flag nearly every film by chance.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

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


@torch.no_grad()
def _score_matrix(
    verifier: SiameseVerifier, first: torch.Tensor, second: torch.Tensor, device, budget: int = 1 << 23
) -> torch.Tensor:
    """Same-patient probability of every (first[a], second[b]) as an (A, B) matrix; `budget`
    bounds the elements of one chunk's |e_a - e_b| tensor (memory, whatever the gallery size)."""
    verifier = verifier.to(device).eval()
    emb_a = embed_all(verifier, first, device=device)
    emb_b = embed_all(verifier, second, device=device)
    chunk = max(1, budget // max(1, emb_b.numel()))
    rows = []
    for k in range(0, len(emb_a), chunk):
        diff = (emb_a[k : k + chunk, None, :] - emb_b[None, :, :]).abs()
        rows.append(torch.sigmoid(verifier.head(diff.to(device)).squeeze(-1)).cpu())
    return torch.cat(rows)


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


def best_match_scores(
    verifier: SiameseVerifier, films: torch.Tensor, gallery: torch.Tensor, device
) -> np.ndarray:
    """Each film's highest same-patient probability against any gallery film."""
    return _score_matrix(verifier, films, gallery, device).max(1).values.numpy()


def memorization_threshold(
    verifier: SiameseVerifier, val_images: torch.Tensor, train_images: torch.Tensor, fpr: float, device="cpu"
) -> float:
    """The best-match score that only `fpr` of real validation films exceed against the training films."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"the memorization false-positive rate must lie in (0, 1), got {fpr}")
    return float(np.quantile(best_match_scores(verifier, val_images, train_images, device), 1.0 - fpr))


def memorization_rate(
    verifier: SiameseVerifier,
    films: torch.Tensor,
    train_images: torch.Tensor,
    threshold: float,
    device="cpu",
) -> dict:
    """Share of `films` whose best match among the training films scores above `threshold`."""
    best = best_match_scores(verifier, films, train_images, device)
    return {
        "rate": float((best > threshold).mean()),
        "threshold": float(threshold),
        "films": int(len(best)),
        "max_score": float(best.max()),
    }
