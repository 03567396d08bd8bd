"""Stage-wise training of PrivDiff-Net (Contract 4), with no Flower in it.

Used by `privdiff train` (central, checkpointed: `training.run`) and by the federated client,
which calls exactly these names:

    models = build_models(cfg)
    state = stage_state(models, "denoiser")            # what FedAvg averages
    load_stage_state(models, "denoiser", state)
    metrics = local_train(models, "denoiser", data, cfg, steps, seed=0, device="cpu")
    save_anonymizer(models, cfg, folder, metadata={...})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from privdiff_core.model.folder import save_models
from privdiff_core.model.privdiff_net import PrivDiffModels
from privdiff_core.training.stages import (
    STAGES,
    StageTrainer,
    TrainingError,
    evaluate_stage,
    load_stage_state,
    local_train,
    lr_factor,
    resolve_steps,
    stage_batch_size,
    stage_state,
)

__all__ = [
    "STAGES",
    "PrivDiffModels",
    "StageTrainer",
    "TrainingError",
    "build_models",
    "evaluate_stage",
    "load_stage_state",
    "local_train",
    "lr_factor",
    "resolve_steps",
    "save_anonymizer",
    "stage_batch_size",
    "stage_state",
]


def build_models(cfg: DictConfig) -> PrivDiffModels:
    """A fresh PrivDiff-Net (on the CPU, eval mode), initialized from `cfg.seed` without touching
    the global RNG: every site that builds from the same config starts from the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return PrivDiffModels(cfg).eval()


def save_anonymizer(
    models: PrivDiffModels, cfg: DictConfig, folder: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write the folder `privdiff_core.anonymizer.Anonymizer.load` opens (see model.folder)."""
    return save_models(models, cfg, folder, metadata)
