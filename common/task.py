"""What the federation trains: the bridge from Flower to privdiff_core (Contract 4).

The ServerApp and ClientApp never touch the model directly; they call a `FederatedTask`.
`PrivdiffTask` is PrivDiff-Net (privdiff_core.training + privdiff_core.data). The protocol
exists so the plumbing can be measured on other models too (benchmarks/federation_rounds.py
runs it on a ~50M-parameter network), with no Flower in privdiff_core.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from privdiff.common.errors import FederationError

STAGES: tuple[str, ...] = ("autoencoder", "denoiser")


class FederatedTask(Protocol):
    """Contract 4 plus data loading, seen from the federation."""

    stages: tuple[str, ...]

    def build_models(self, cfg: DictConfig) -> torch.nn.Module: ...

    def stage_state(self, models: torch.nn.Module, stage: str) -> dict[str, torch.Tensor]: ...

    def load_stage_state(
        self, models: torch.nn.Module, stage: str, state: dict[str, torch.Tensor]
    ) -> None: ...

    def load_site_data(self, site_dir: Path, cfg: DictConfig, cache_dir: Path | None) -> Any: ...

    def num_examples(self, data: Any) -> int: ...

    def load_validation_data(self, site_dir: Path, cfg: DictConfig, split: str = "val") -> Any: ...

    def validation_loss(
        self, models: torch.nn.Module, stage: str, data: Any, cfg: DictConfig, batches: int, device: str
    ) -> float: ...

    def anonymize(
        self, models: torch.nn.Module, cfg: DictConfig, images: torch.Tensor, seed: int
    ) -> torch.Tensor: ...

    def local_train(
        self,
        models: torch.nn.Module,
        stage: str,
        data: Any,
        cfg: DictConfig,
        steps: int,
        seed: int,
        device: str,
        optimizer_state: dict[str, torch.Tensor] | None = None,
        schedule_span: tuple[float, float] = (0.0, 1.0),
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, float]: ...

    def save_anonymizer(
        self, models: torch.nn.Module, cfg: DictConfig, folder: Path, metadata: dict[str, Any]
    ) -> None: ...


def resolve_device(requested: str) -> str:
    """`auto` picks CUDA when this machine has it, else the CPU."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise FederationError("device=cuda but this machine has no CUDA device (use device=auto)")
    return requested


def _cache_key(site_dir: Path, size: int) -> str:
    """Changes when the site's label table or its image folder changes."""
    parts = [str(site_dir.resolve()), str(size)]
    for entry in sorted(site_dir.iterdir()):
        stat = entry.stat()
        parts.append(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


class PrivdiffTask:
    """PrivDiff-Net trained stage-wise (privdiff_core.training) on a site's train split."""

    stages = STAGES

    def build_models(self, cfg: DictConfig) -> torch.nn.Module:
        from privdiff_core.training import build_models

        return build_models(cfg)  # seeded by cfg.seed: every process builds the same initial model

    def stage_state(self, models: torch.nn.Module, stage: str) -> dict[str, torch.Tensor]:
        from privdiff_core.training import stage_state

        return stage_state(models, stage)

    def load_stage_state(self, models: torch.nn.Module, stage: str, state: dict[str, torch.Tensor]) -> None:
        from privdiff_core.training import load_stage_state

        load_stage_state(models, stage, state)

    def load_site_data(self, site_dir: Path, cfg: DictConfig, cache_dir: Path | None) -> Any:
        """The site's train split as CXRTensors, decoded once and then read from `cache_dir`.

        In deployment every Flower message starts a fresh `flwr-clientapp` process, so decoding
        DICOMs per message would dominate a round; the cache file is keyed by the folder's
        listing and the image size, and written atomically.
        """
        from privdiff_core.data import CXRTensors, open_dataset

        size = cfg.image_size
        cache_file = None
        if cache_dir is not None:
            cache_file = cache_dir / f"train-{_cache_key(site_dir, size)}.pt"
            if cache_file.is_file():
                saved = torch.load(cache_file, weights_only=True)
                return CXRTensors(**saved)
        data = open_dataset(site_dir, size, split="train", progress=False).load_tensors(progress=False)
        if cache_file is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
            torch.save({f.name: getattr(data, f.name) for f in fields(data)}, tmp)
            tmp.replace(cache_file)
        return data

    def num_examples(self, data: Any) -> int:
        return len(data)

    def load_validation_data(self, site_dir: Path, cfg: DictConfig, split: str = "val") -> Any:
        """The site's val split (never trained on): what the validation gate scores models on;
        `split="test"` the other held-out films (the privacy check's extra patients)."""
        from privdiff_core.data import open_dataset

        dataset = open_dataset(site_dir, cfg.image_size, split=split, progress=False)
        return dataset.load_tensors(progress=False)

    def validation_loss(
        self, models: torch.nn.Module, stage: str, data: Any, cfg: DictConfig, batches: int, device: str
    ) -> float:
        """Mean loss of `stage` over `batches` fixed batches (the same batches for every model)."""
        from privdiff_core.training import evaluate_stage

        return evaluate_stage(models, stage, data, cfg, batches, seed=cfg.seed, device=device)

    def anonymize(
        self, models: torch.nn.Module, cfg: DictConfig, images: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """The model's outputs for (N, 1, S, S) images with its config's anonymize settings and
        every attribute estimated from the image, at the images' size (the model runs at its own)."""
        from torch.nn import functional as F

        from privdiff_core.anonymizer import Anonymizer

        anonymizer = Anonymizer.from_models(models, cfg)
        size = images.shape[-1]
        if size != anonymizer.image_size:
            images = F.interpolate(images, size=anonymizer.image_size, mode="bilinear", antialias=True)
        with torch.no_grad():
            outputs = anonymizer.anonymize(images.clamp(-1, 1).to(anonymizer.device), seed=seed).cpu()
        if outputs.shape[-1] != size:
            outputs = F.interpolate(outputs, size=size, mode="bilinear", antialias=True)
        return outputs.clamp(-1, 1)

    def local_train(
        self,
        models: torch.nn.Module,
        stage: str,
        data: Any,
        cfg: DictConfig,
        steps: int,
        seed: int,
        device: str,
        optimizer_state: dict[str, torch.Tensor] | None = None,
        schedule_span: tuple[float, float] = (0.0, 1.0),
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, float]:
        from privdiff_core.training import local_train

        return local_train(
            models,
            stage,
            data,
            cfg,
            steps,
            seed=seed,
            device=device,
            progress=False,
            optimizer_state=optimizer_state,
            schedule_span=schedule_span,
            on_progress=on_progress,
        )

    def save_anonymizer(
        self, models: torch.nn.Module, cfg: DictConfig, folder: Path, metadata: dict[str, Any]
    ) -> None:
        from privdiff_core.training import save_anonymizer

        save_anonymizer(models, cfg, folder, metadata)
