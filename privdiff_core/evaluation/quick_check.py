"""The quick privacy/utility check of a candidate anonymizer on a handful of a site's own films.

Two numbers, cheap enough to run at every site before a federated model is signed:

- re-ID AUC: how well the site's verifier tells (output i, its input i) from (output i, input j
  of another patient), scored by closeness in the verifier's embedding space (the distance its
  head reads; a copy lies at distance 0, so an anonymizer that returned its input scores 1
  however briefly the verifier trained). 0.5: an output says nothing about whose film it came
  from; 1.0: every output still points at its input.
- diagnosis agreement: the fraction of (film, finding) decisions of the site's findings
  classifier (sigmoid > 0.5) that are the same on the output as on the input. 1.0: the output
  shows what the input showed, as far as that classifier can tell.

Both judges come from the site, never from the anonymizer, so a candidate cannot be built to
fool them (client/site_verifier.py trains them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from privdiff_core.nets import ImageClassifier, SiameseVerifier
from privdiff_core.verification import embed_all

from .attackers import predict


def output_input_pairs(patient_ids: Sequence[str]) -> np.ndarray:
    """Rows (output i, input j, same): every film with its own input, and with every input of
    another patient (another film of the same patient is neither, so it is left out)."""
    ids = np.asarray(patient_ids)
    i, j = np.meshgrid(np.arange(len(ids)), np.arange(len(ids)), indexing="ij")
    keep = (i == j) | (ids[i] != ids[j])
    return np.stack([i[keep], j[keep], (i == j)[keep].astype(np.int64)], axis=1)


def reid_auc(
    verifier: SiameseVerifier,
    originals: torch.Tensor,
    outputs: torch.Tensor,
    patient_ids: Sequence[str],
    device: str | torch.device = "cpu",
) -> float | None:
    """ROC AUC of the verifier on (output, input) pairs (module doc); None for one patient only."""
    if len(set(patient_ids)) < 2:
        return None
    pairs = output_input_pairs(patient_ids)
    first, second = embed_all(verifier, outputs, device=device), embed_all(verifier, originals, device=device)
    distance = (first[pairs[:, 0]] - second[pairs[:, 1]]).norm(dim=1).numpy()
    return float(roc_auc_score(pairs[:, 2], -distance))


def diagnosis_agreement(
    classifier: ImageClassifier,
    originals: torch.Tensor,
    outputs: torch.Tensor,
    device: str | torch.device = "cpu",
) -> float:
    """Fraction of finding decisions (probability > 0.5) that are equal on output and input."""
    before = torch.sigmoid(predict(classifier, originals, device=device)) > 0.5
    after = torch.sigmoid(predict(classifier, outputs, device=device)) > 0.5
    return float((before == after).float().mean())
