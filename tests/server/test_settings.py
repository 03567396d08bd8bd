"""The `federation:` config section (server/settings.py)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from privdiff.common.errors import FederationError
from privdiff.server.settings import SecAggSettings, federation_settings
from privdiff.server.workflow import FederatedPlan
from privdiff_core.config import load_config


@pytest.mark.parametrize("name", ["tiny", "demo", "paper"])
def test_every_shipped_config_has_a_valid_federation_plan_with_secagg_on(name):
    settings = federation_settings(load_config(name))
    assert settings.secagg.enabled and not settings.dp.enabled
    assert [stage for stage, _ in settings.plan] == ["autoencoder", "denoiser"]
    assert settings.min_sites >= 2


@pytest.mark.parametrize(
    ("sites", "shares", "threshold"), [(2, 2, 2), (3, 3, 2), (5, 5, 3), (10, 9, 5), (30, 11, 6), (100, 15, 8)]
)
def test_automatic_share_counts_grow_logarithmically_with_a_majority_threshold(sites, shares, threshold):
    assert SecAggSettings().shares_for(sites) == (shares, threshold)


def test_a_threshold_above_the_shares_is_refused():
    with pytest.raises(FederationError, match="reconstruction_threshold"):
        SecAggSettings(num_shares=3, reconstruction_threshold=5).shares_for(3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rounds": {"autoencoder": 0, "denoiser": 0}}, "nothing to train"),
        ({"rounds": {"autoencoder": -1}}, "rounds.autoencoder"),
        ({"local_steps": {"denoiser": 0}}, "local_steps.denoiser"),
        ({"min_sites": 1}, "min_sites"),
        ({"secagg": {"clipping_range": "wide"}}, "secagg.clipping_range"),
        ({"secagg": {"implementation": "homemade"}}, "implementation"),
        ({"dp": {"enabled": True, "clipping_norm": 0}}, "clipping_norm"),
        ({"dp": {"enabled": True, "noise_multiplier": 0}}, "no noise, no epsilon"),
        ({"dp": {"enabled": True, "target_delta": 1.0}}, "target_delta"),
        ({"secagg": {"initial_clipping_range": 16.0}}, "max_clipping_range"),
        ({"max_site_weight": 0}, "max_site_weight"),
        ({"validation": {"max_loss_ratio": 0}}, "validation.max_loss_ratio"),
        ({"validation": {"quorum": "most"}}, "validation.quorum"),
        ({"server_lr": {"denoiser": 0}}, "server_lr.denoiser"),
        ({"server_lr": {"autoencoder": 50}}, "server_lr.autoencoder"),
    ],
)
def test_bad_settings_name_the_key_to_fix(override, message):
    cfg = OmegaConf.merge(load_config("tiny"), {"federation": override})
    with pytest.raises(FederationError, match=message):
        federation_settings(cfg)


def test_a_config_without_a_federation_section_is_refused():
    with pytest.raises(FederationError, match="federation"):
        federation_settings(OmegaConf.create({"seed": 0}))


def test_a_sites_claimed_update_range_cannot_widen_the_range_past_the_cap(tmp_path):
    """Sites report their own range exponents; one claiming 2**30 gets max_clipping_range."""
    from privdiff.common.task import PrivdiffTask

    cfg = OmegaConf.merge(
        load_config("tiny"),
        {"federation": {"secagg": {"initial_clipping_range": 1.0, "max_clipping_range": 4.0}}},
    )
    plan = FederatedPlan(cfg, federation_settings(cfg), PrivdiffTask(), tmp_path, tmp_path / "key.pem")
    assert plan._next_range([30, -3]) == 4.0
    assert plan._next_range([-3]) == 2.0**-1  # an honest range: 2 bits above the largest update


def test_the_server_step_scales_the_averaged_update_of_the_weights_but_not_of_the_buffers(tmp_path):
    """server_lr 2: weights move twice the sites' mean update; the latent shift and scale (float
    buffers, measured statistics) take the mean as it is."""
    import numpy as np
    import torch

    from privdiff.common.task import PrivdiffTask
    from privdiff.common.updates import StateLayout, flatten_state

    cfg = OmegaConf.merge(load_config("tiny"), {"federation": {"server_lr": {"autoencoder": 2.0}}})
    task = PrivdiffTask()
    plan = FederatedPlan(cfg, federation_settings(cfg), task, tmp_path, tmp_path / "key.pem")
    models = task.build_models(cfg)
    before = task.stage_state(models, "autoencoder")
    update = np.full(StateLayout.of(before).size, 0.01, np.float32)
    plan._apply(models, "autoencoder", update)
    after = task.stage_state(models, "autoencoder")
    weights = {name for name, _ in models.named_parameters()}
    buffers = [name for name in before if name not in weights]
    assert buffers and "latent_scale" in buffers
    for name in before:
        expected = 0.02 if name in weights else 0.01
        assert torch.allclose(
            after[name] - before[name], torch.full_like(before[name], expected), atol=1e-6
        ), name
    assert flatten_state(after, StateLayout.of(after)).size == update.size
