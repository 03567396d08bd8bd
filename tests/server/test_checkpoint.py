"""Server checkpoints (server/checkpoint.py): written atomically, refused for another config."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from privdiff.common.errors import FederationError
from privdiff.server.checkpoint import (
    CHECKPOINT_FILE,
    ServerState,
    config_fingerprint,
    load_checkpoint,
    save_checkpoint,
)


def _cfg(**model):
    return OmegaConf.create(
        {
            "seed": 0,
            "unet": {"width": 32, **model},
            "out": "runs/x",
            "federation": {"rounds": {"denoiser": 3}},
        }
    )


def _state(cfg) -> ServerState:
    return ServerState(
        models={"w": torch.arange(4.0)},
        rounds_done={"autoencoder": 2, "denoiser": 1},
        clipping_range=0.25,
        history=[{"round": 1, "loss": 0.5}],
        sites=3,
        config_fingerprint=config_fingerprint(cfg),
    )


def test_a_saved_state_loads_back(tmp_path):
    cfg = _cfg()
    save_checkpoint(tmp_path, _state(cfg))
    state = load_checkpoint(tmp_path, cfg)
    assert state.rounds_done == {"autoencoder": 2, "denoiser": 1} and state.clipping_range == 0.25
    assert torch.equal(state.models["w"], torch.arange(4.0)) and state.history[0]["loss"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left


def test_more_rounds_or_another_out_folder_still_resume(tmp_path):
    save_checkpoint(tmp_path, _state(_cfg()))
    cfg = _cfg()
    cfg.federation.rounds.denoiser = 10
    cfg.out = "elsewhere"
    assert load_checkpoint(tmp_path, cfg) is not None


def test_a_checkpoint_of_another_model_config_is_refused(tmp_path):
    save_checkpoint(tmp_path, _state(_cfg()))
    with pytest.raises(FederationError, match="another model"):
        load_checkpoint(tmp_path, _cfg(width=64))


def test_no_checkpoint_means_a_fresh_start_and_garbage_is_reported(tmp_path):
    assert load_checkpoint(tmp_path, _cfg()) is None
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(FederationError, match="unreadable"):
        load_checkpoint(tmp_path, _cfg())
