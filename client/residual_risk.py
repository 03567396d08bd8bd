"""Residual-risk check: is a released image still linkable to the image it was made from?

The paper admits residual biometric cues. Before an output leaves the site, a patient-verification
network (`privdiff_core.nets.SiameseVerifier`, Packhäuser et al. 2022) scores the pair (original,
anonymized); an output whose same-patient probability is above the quarantine threshold is held
back in OUT/quarantine/ and counted, not released.

Where the verifier comes from (first that applies):

1. `--verifier DIR`: an *independent* verifier the site trained on its own images (identities never
   leave the site), `verifier.json` + `verifier.safetensors`. The stronger judge: the anonymizer
   was never optimised against it.
2. The site's own verifier in its site folder, `$PRIVDIFF_HOME/verifier` (`privdiff-client
   train-verifier` trains it there; client/site_verifier.py), used automatically when present.
3. Only with `--own-verifier`: the anonymizer's own identity verifier (its attribute encoder's
   `verifier`), which the model folder always carries and the federation's signature covers.
   Weaker: the denoiser is conditioned on this very embedding, so its outputs may fool it more
   than an outsider, and a poisoned model brings a verifier that agrees with it. Without an
   independent verifier and without that flag the release refuses to start.

With `--gallery DIR` (a folder of the site's own films, any layout `open_dataset` reads), each
output is also checked against every gallery film, as `privdiff evaluate` checks memorization
(`privdiff_core.evaluation.linkage`): its score is raised to 1 when its best same-patient score
against any gallery film (the verifier head's closeness reading, `linkage.closeness_head`) is
higher, or its distance to the nearest gallery film in the verifier's embedding space is smaller,
than all but `MEMORIZATION_FPR / 2` of the gallery's films reach against *another* patient's films
(every such match is a false one; the distance catches a copy: the verifier never trained on a
film paired with itself, so its head alone may miss one). Both thresholds are calibrated on the
gallery as the evaluation's are on its validation films: a raw best score over thousands of
films is no probability (the whole head's best of ~1700 unrelated films sat at 0.86-0.94, so an
uncalibrated 0.5 would hold back nearly every output).
A federation model can memorise patients of any site; this catches outputs that show one of ours.

The check is switched off only by `--no-residual-check`; the run's audit and summary say which
verifier judged, or that none did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from privdiff_core.errors import PrivdiffError
from privdiff_core.evaluation.linkage import (
    MEMORIZATION_FPR,
    false_match_thresholds,
    head_matrix,
    match_embeddings,
)
from privdiff_core.nets import SiameseVerifier
from privdiff_core.verification import VerifierTraining, embed_all, train_verifier

VERIFIER_FORMAT = "privdiff-verifier/1"
VERIFIER_CONFIG = "verifier.json"
VERIFIER_WEIGHTS = "verifier.safetensors"


class VerifierError(PrivdiffError):
    """The verifier folder is missing, incomplete or does not match its config."""


def save_verifier(
    model: SiameseVerifier,
    folder: str | Path,
    image_size: int,
    backbone: str,
    embed_dim: int,
    widths: Sequence[int] | None = None,
) -> None:
    """Write a verifier folder `--verifier` can load (weights + the settings that rebuild it)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "format": VERIFIER_FORMAT,
        "image_size": int(image_size),
        "backbone": backbone,
        "embed_dim": embed_dim,
        "widths": list(widths) if widths else None,
    }
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, folder / VERIFIER_WEIGHTS)
    (folder / VERIFIER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))


def train_site_verifier(
    data: str | Path, folder: str | Path, image_size: int, settings: VerifierTraining | None = None
) -> SiameseVerifier:
    """Train a verifier on a site's own images (any layout `open_dataset` reads) and save it."""
    from privdiff_core.data import open_dataset

    settings = settings or VerifierTraining()
    tensors = open_dataset(data, image_size).load_tensors()
    model = train_verifier(tensors.image, tensors.patient_ids, settings, progress=False)
    save_verifier(model, folder, image_size, settings.backbone, settings.embed_dim, settings.widths)
    return model


def load_verifier(folder: str | Path, device: str | torch.device = "cpu") -> tuple[SiameseVerifier, int]:
    """(verifier, the image size it was trained at) from a folder written by `save_verifier`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / VERIFIER_CONFIG).read_text())
        state = load_file(folder / VERIFIER_WEIGHTS)
    except (OSError, ValueError) as err:
        raise VerifierError(
            f"--verifier {folder}: needs {VERIFIER_CONFIG} and {VERIFIER_WEIGHTS} ({err})"
        ) from err
    if config.get("format") != VERIFIER_FORMAT:
        raise VerifierError(
            f"--verifier {folder}: format {config.get('format')!r}, expected {VERIFIER_FORMAT}"
        )
    widths = config.get("widths")  # absent in folders written before it was kept: nets.py's default
    model = SiameseVerifier(config["backbone"], int(config["embed_dim"]), tuple(widths) if widths else None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise VerifierError(f"--verifier {folder}: weights do not fit its config ({err})") from err
    return model.to(device).eval(), int(config["image_size"])


class GalleryError(PrivdiffError):
    """The site gallery cannot be read or is too small to calibrate the copy check."""


@dataclass
class SiteGallery:
    """The site's own films (at the verifier's image size) and the thresholds calibrated on them:
    a best closeness score above `score_threshold` or a nearest distance below `copy_distance`
    is a match (`load_gallery`)."""

    images: torch.Tensor
    embeddings: torch.Tensor  # the verifier's, of `images`: computed once, matched for every batch
    copy_distance: float
    score_threshold: float
    folder: str


def load_gallery(
    folder: str | Path, verifier: SiameseVerifier, image_size: int, fpr: float = MEMORIZATION_FPR
) -> SiteGallery:
    """Read a gallery folder and calibrate its two thresholds on each gallery film's best match
    among *other* patients' films (every such match is a false one): the `fpr / 2` quantile of
    the nearest distances (`copy_distance`) and the `1 - fpr / 2` quantile of the best closeness
    scores (`score_threshold`), so that at most `fpr` of unrelated films cross either."""
    from privdiff_core.data import open_dataset

    try:
        tensors = open_dataset(folder, image_size, progress=False).load_tensors(progress=False)
    except (OSError, ValueError) as err:
        raise GalleryError(f"--gallery {folder}: cannot be read as a data folder ({err})") from err
    ids = np.asarray(tensors.patient_ids)
    if len(set(ids.tolist())) < 2:
        raise GalleryError(f"--gallery {folder}: needs films of at least two patients to calibrate the check")
    device = next(verifier.parameters()).device
    with torch.no_grad():
        emb = embed_all(verifier.eval(), tensors.image, device=device)
        distance = torch.cdist(emb, emb).numpy()
        score = head_matrix(verifier, emb, emb, device, closeness=True).numpy()
    same_patient = ids[:, None] == ids[None, :]  # the same patient's films are no false match
    distance[same_patient], score[same_patient] = np.inf, -np.inf
    score_threshold, copy_distance = false_match_thresholds(score.max(1), distance.min(1), fpr)
    return SiteGallery(tensors.image, emb, copy_distance, score_threshold, str(folder))


@dataclass
class ResidualRiskCheck:
    """Same-patient probability of (input, output) pairs under one verifier; with a site gallery,
    1 where the output matches a gallery film beyond the gallery's thresholds (module docstring)."""

    verifier: SiameseVerifier
    image_size: int
    source: str  # "site verifier" or "anonymizer's own verifier": recorded in the audit
    gallery: SiteGallery | None = None

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.image_size:
            return images
        return F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", antialias=True).clamp(
            -1, 1
        )

    @torch.no_grad()
    def same_patient_probability(self, originals: torch.Tensor, anonymized: torch.Tensor) -> np.ndarray:
        """(B,) probabilities for (B, 1, S, S) pairs in [-1, 1]."""
        device = next(self.verifier.parameters()).device
        first = self._fit(originals.float()).to(device)
        second = self._fit(anonymized.float()).to(device)
        probability = torch.sigmoid(self.verifier(first, second)).float().cpu().numpy()
        if self.gallery is None:
            return probability
        emb = embed_all(self.verifier, second, device=device)
        best, nearest = match_embeddings(self.verifier, emb, self.gallery.embeddings, device)
        probability[(best > self.gallery.score_threshold) | (nearest < self.gallery.copy_distance)] = 1.0
        return probability


def choose_verifier(verifier_dir: str | Path | None, own_verifier: bool) -> Path | None:
    """The verifier folder the check will use (module docstring); None: the anonymizer's own,
    allowed only with `own_verifier`. Raises VerifierError when no verifier may judge."""
    from privdiff.client.site_verifier import default_site_verifier, has_site_verifier

    if verifier_dir is not None:
        return Path(verifier_dir)
    site_folder = default_site_verifier()
    if has_site_verifier(site_folder):
        return site_folder
    if own_verifier:
        return None
    raise VerifierError(
        f"no independent verifier for the residual-risk check (none at {site_folder}): train one "
        "with `privdiff-client train-verifier --data DIR`, or pass --verifier DIR; --own-verifier "
        "accepts the anonymizer's own (weaker) verifier"
    )


def residual_risk_check(
    anonymizer,
    verifier_dir: str | Path | None,
    gallery_dir: str | Path | None = None,
    own_verifier: bool = False,
) -> ResidualRiskCheck:
    """The check of the module docstring with the verifier `choose_verifier` picks; with
    `gallery_dir`, outputs are also matched against the site's own films."""
    folder = choose_verifier(verifier_dir, own_verifier)
    if folder is not None:
        verifier, size = load_verifier(folder, anonymizer.device)
        source = "site verifier" if verifier_dir is not None else f"site verifier ({folder})"
        check = ResidualRiskCheck(verifier, size, source)
    else:
        verifier = anonymizer.models.encoder.verifier.eval()
        check = ResidualRiskCheck(
            verifier, anonymizer.image_size, "anonymizer's own verifier (--own-verifier)"
        )
    if gallery_dir is not None:
        check.gallery = load_gallery(gallery_dir, check.verifier, check.image_size)
        check.source += f" + site gallery ({len(check.gallery.images)} films)"
    return check
