"""Residual-risk check: is a released image still linkable to the image it was made from?

The paper admits residual biometric cues. Before an output leaves the site, a patient-verification
network (`privdiff_core.nets.SiameseVerifier`, Packhäuser et al. 2022) scores the pair (original,
anonymized); an output whose same-patient probability is above the quarantine threshold is held
back in OUT/quarantine/ and counted, not released.

Where the verifier comes from (first that applies):

1. `--verifier DIR`: an *independent* verifier the site trained on its own images (identities never
   leave the site): `train_site_verifier(site_folder, DIR, image_size)` trains one on a site
   folder (Contract 1) with `privdiff_core.verification.train_verifier` and saves it as
   `verifier.json` + `verifier.safetensors`. The stronger judge: the anonymizer was never
   optimised against it.
2. The anonymizer's own identity verifier (its attribute encoder's `verifier`), which the model
   folder always carries and the federation's signature covers. Weaker: the denoiser is
   conditioned on this very embedding, so its outputs may fool it more than an outsider.

The check is switched off only by `--no-residual-check`; the run's audit and summary say which
verifier judged, or that none did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from privdiff_core.errors import PrivdiffError
from privdiff_core.nets import SiameseVerifier
from privdiff_core.verification import VerifierTraining, train_verifier

VERIFIER_FORMAT = "privdiff-verifier/1"
VERIFIER_CONFIG = "verifier.json"
VERIFIER_WEIGHTS = "verifier.safetensors"


class VerifierError(PrivdiffError):
    """The verifier folder is missing, incomplete or does not match its config."""


def save_verifier(
    model: SiameseVerifier, folder: str | Path, image_size: int, backbone: str, embed_dim: int
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
    save_verifier(model, folder, image_size, settings.backbone, settings.embed_dim)
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
    model = SiameseVerifier(config["backbone"], int(config["embed_dim"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise VerifierError(f"--verifier {folder}: weights do not fit its config ({err})") from err
    return model.to(device).eval(), int(config["image_size"])


@dataclass
class ResidualRiskCheck:
    """Same-patient probability of (input, output) pairs under one verifier."""

    verifier: SiameseVerifier
    image_size: int
    source: str  # "site verifier" or "anonymizer's own verifier": recorded in the audit

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
        return torch.sigmoid(self.verifier(first, second)).float().cpu().numpy()


def residual_risk_check(anonymizer, verifier_dir: str | Path | None) -> ResidualRiskCheck:
    """The check of the module docstring: the site's verifier when given, else the anonymizer's."""
    if verifier_dir is not None:
        verifier, size = load_verifier(verifier_dir, anonymizer.device)
        return ResidualRiskCheck(verifier, size, "site verifier")
    verifier = anonymizer.models.encoder.verifier.eval()
    return ResidualRiskCheck(verifier, anonymizer.image_size, "anonymizer's own verifier")
