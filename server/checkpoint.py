"""The server's state after every completed round, written atomically, read on restart.

A restarted ServerApp with the same run folder continues at the round after the last one in
`checkpoint.pt`; a crash mid-round loses only that round. The file holds the full model state
(every stage: the frozen VAE is part of what the denoiser rounds build on), where the plan
stands, SecAgg+'s clipping range for the next round and the per-round history.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from privdiff.common.errors import FederationError

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "privdiff-federation-checkpoint/1"


def config_fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that shapes the model and its training, minus the federation plan
    (more rounds may be added to a run) and where the outputs go."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    for key in ("federation", "out", "data"):
        plain.pop(key, None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(plain)).encode()).hexdigest()[:16]


@dataclass
class ServerState:
    models: dict[str, torch.Tensor]
    rounds_done: dict[str, int]  # stage -> completed rounds
    clipping_range: float | None  # SecAgg+ range for the next round of the current stage (None: start value)
    history: list[dict[str, Any]] = field(default_factory=list)
    sites: int = 0
    completed: bool = False  # every round done (the anonymizer may still need writing/sending)
    config_fingerprint: str = ""
    site_weights: dict[int, int] = field(default_factory=dict)  # the registry: node id -> weight
    excluded: list[int] = field(default_factory=list)  # node ids whose uploads made a round impossible
    privacy: dict[str, Any] = field(default_factory=dict)  # DP: population, accountant state, budget_spent


def save_checkpoint(folder: Path, state: ServerState) -> Path:
    """Write `folder/checkpoint.pt` via a temporary file and a rename (never half-written)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    tmp = folder / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save({"format": FORMAT, **state.__dict__}, tmp)
    with open(tmp, "rb") as handle:  # on disk before the rename makes it the checkpoint
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: Path, cfg: DictConfig) -> ServerState | None:
    """The saved state, or None when the run folder has none; refuses another config's state."""
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise FederationError(f"{path}: unreadable checkpoint ({err}); delete it to start over") from err
    if saved.pop("format", None) != FORMAT:
        raise FederationError(f"{path}: not a privdiff federation checkpoint")
    state = ServerState(**saved)
    expected = config_fingerprint(cfg)
    if state.config_fingerprint != expected:
        raise FederationError(
            f"{path} was written for another model/training config ({state.config_fingerprint}, now "
            f"{expected}); use a new out= folder, or the config of that run to resume it"
        )
    return state
