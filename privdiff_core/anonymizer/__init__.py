"""Load a trained anonymizer folder and anonymize images with it (Contract 3).

    anonymizer = Anonymizer.load(folder, device="cpu")
    anonymizer.image_size                                          # int
    out = anonymizer.anonymize(images, conditions=None, seed=0)    # (B,1,S,S) in [-1,1] -> same

The folder is checked against its manifest's SHA-256 hashes before anything is loaded, so a
corrupted or tampered file fails loudly. Signature checks (a federation's `signature.json`) are
the caller's job (`privdiff_core.signing.verify_model`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from privdiff_core.errors import PrivdiffError
from privdiff_core.model.conditioning import Conditions
from privdiff_core.model.folder import MANIFEST_FILE, ModelFolderError, load_models
from privdiff_core.model.privdiff_net import ANONYMIZE_MODES, PrivDiffModels, resolve_device

__all__ = [
    "Anonymizer",
    "AnonymizerInputError",
    "Conditions",
    "ModelFolderError",
    "find_model_folder",
    "seed_for",
]

# Images may exceed [-1, 1] by rounding noise only.
RANGE_TOLERANCE = 1e-3


class AnonymizerInputError(PrivdiffError, ValueError):
    """Images the anonymizer cannot take: wrong type, shape, size or value range."""


def find_model_folder(path: str | Path) -> Path:
    """The anonymizer folder itself, or the `anonymizer/` folder of a `privdiff train` run."""
    path = Path(path)
    if not path.exists():
        raise ModelFolderError(f"{path}: no such model folder")
    if not (path / MANIFEST_FILE).is_file() and (path / "anonymizer" / MANIFEST_FILE).is_file():
        return path / "anonymizer"
    return path


def seed_for(seed: int, key: str) -> int:
    """A per-image noise seed from a run seed and a stable key (e.g. the file's relative path), so
    an image's output does not depend on which batch or position it was processed in."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Anonymizer:
    """A trained PrivDiff-Net ready to anonymize; build with `load` (folder) or `from_models`."""

    def __init__(self, models: PrivDiffModels, cfg: DictConfig, manifest: dict[str, Any] | None = None):
        self.models = models.eval()
        self.cfg = cfg
        self.manifest = manifest or {}

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Anonymizer:
        """Open an anonymizer folder (or a training run folder holding one), hashes checked."""
        models, cfg, manifest = load_models(find_model_folder(folder), resolve_device(device))
        return cls(models, cfg, manifest)

    @classmethod
    def from_models(cls, models: PrivDiffModels, cfg: DictConfig | None = None) -> Anonymizer:
        """Use models in memory (e.g. just trained) without saving them first."""
        return cls(models, cfg if cfg is not None else models.cfg)

    @property
    def image_size(self) -> int:
        return self.models.image_size

    @property
    def device(self) -> torch.device:
        return self.models.device

    def check_images(self, images: Any) -> None:
        """Raise AnonymizerInputError unless images is a finite float (B, 1, S, S) tensor in [-1, 1]."""
        size = self.image_size
        if not isinstance(images, torch.Tensor):
            raise AnonymizerInputError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if not images.is_floating_point():
            raise AnonymizerInputError(f"images must be float in [-1, 1], got dtype {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 1 or tuple(images.shape[2:]) != (size, size):
            raise AnonymizerInputError(
                f"images must have shape (B, 1, {size}, {size}) for this model, got {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise AnonymizerInputError("images is an empty batch")
        if not torch.isfinite(images).all():
            raise AnonymizerInputError("images contain NaN or infinite values")
        low, high = images.min().item(), images.max().item()
        if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise AnonymizerInputError(
                f"images must lie in [-1, 1] (got {low:.3g}..{high:.3g}); "
                "map unit grey x in [0, 1] with 2x - 1"
            )

    def anonymize(
        self,
        images: torch.Tensor,
        conditions: Conditions | None = None,
        seed: int | Sequence[int] = 0,
        *,
        strength: float | None = None,
        ddim_steps: int | None = None,
        batch_size: int | None = None,
        mode: str | None = None,
    ) -> torch.Tensor:
        """Anonymized images (B, 1, S, S) in [-1, 1], on the input's device.

        conditions: what is known (age group, sex, findings); unknown entries are estimated by
        the model's attribute encoder (config `anonymize.estimate_unknown`). seed: one int (image
        i gets noise seed `seed_for(seed, str(i))`) or one seed per image. Deterministic: the same
        seeds give bit-identical outputs on the CPU. strength / ddim_steps / batch_size / mode
        default to the model's `anonymize` config. mode "generative" draws a new film from pure
        noise with the input's findings (strength unused); "img2img" redraws the input partly.
        """
        self.check_images(images)
        batch = images.shape[0]
        if conditions is not None:
            conditions.validate(batch)
        if isinstance(seed, int):
            seeds = [seed_for(seed, str(i)) for i in range(batch)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != batch:
                raise AnonymizerInputError(f"{len(seeds)} seeds for {batch} images")
        section = self.cfg.anonymize
        strength = float(section.strength if strength is None else strength)
        ddim_steps = int(section.ddim_steps if ddim_steps is None else ddim_steps)
        batch_size = int(section.batch_size if batch_size is None else batch_size)
        # Models saved before the generative mode existed ran img2img.
        mode = str(section.get("mode", "img2img") if mode is None else mode)
        if mode not in ANONYMIZE_MODES:
            raise AnonymizerInputError(f"mode must be one of {', '.join(ANONYMIZE_MODES)}, got {mode!r}")
        if not 0.0 < strength <= 1.0:
            raise AnonymizerInputError(f"strength must be in (0, 1], got {strength}")
        if mode == "img2img" and int(ddim_steps * strength) < 1:
            raise AnonymizerInputError(
                f"strength {strength} x {ddim_steps} DDIM steps leaves no denoising step"
            )
        outputs = []
        for start in range(0, batch, batch_size):
            index = torch.arange(start, min(start + batch_size, batch))
            if len(index) == 1:
                # A lone image runs beside a copy of itself: one-row matrix products take another
                # BLAS path whose rounding differs, and the output must not depend on the batching.
                index = index.repeat(2)
            out = self.models.anonymize(
                images[index],
                None if conditions is None else conditions.index(index),
                [seeds[i] for i in index],
                strength,
                ddim_steps,
                estimate=bool(section.estimate_unknown),
                mode=mode,
            )
            outputs.append(out[: min(batch_size, batch - start)].to(images.device))
        return torch.cat(outputs)
