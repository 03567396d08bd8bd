"""The `federation:` section of a config, checked once, as plain Python values.

Every knob of the federated run lives in the privdiff config (configs/*.yaml), so a simulation
and a deployment of the same config run the same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from privdiff.common.errors import FederationError
from privdiff.common.task import STAGES

AUTO = "auto"


@dataclass(frozen=True)
class SecAggSettings:
    enabled: bool = True
    num_shares: int | str = AUTO
    reconstruction_threshold: int | str = AUTO
    clipping_range: float | str = AUTO
    initial_clipping_range: float = 8.0
    max_clipping_range: float = 8.0  # an automatic range never grows beyond this (sites report their ranges)
    range_headroom_bits: int = 2  # automatic range: 2**this x last round's largest |update|, rounded up
    timeout_s: float | None = None
    implementation: str = "privdiff"  # privdiff: Flower's protocol, fast vector path; flower: stock

    def shares_for(self, sites: int) -> tuple[int, int]:
        """(num_shares, reconstruction_threshold) for a round with `sites` participants.

        auto: each site shares its keys with a neighbourhood of 2*ceil(log2 n)+1 sites (all of
        them for n <= 5), odd as SecAgg+ wants; the threshold is a majority of that neighbourhood,
        so a round survives up to num_shares - threshold dropouts among any site's neighbours
        while no minority of neighbours can unmask a site.
        """
        if sites < 2:
            raise FederationError(f"SecAgg+ needs at least 2 sites in a round, got {sites}")
        if self.num_shares == AUTO:
            shares = min(sites, 2 * math.ceil(math.log2(sites)) + 1)
            if shares < sites and shares % 2 == 0:
                shares += 1
        else:
            shares = min(int(self.num_shares), sites)
        threshold = (
            shares // 2 + 1 if self.reconstruction_threshold == AUTO else int(self.reconstruction_threshold)
        )
        if not 2 <= threshold <= shares:
            raise FederationError(
                f"federation.secagg.reconstruction_threshold={threshold} must be between 2 and "
                f"num_shares={shares} for {sites} sites"
            )
        return shares, threshold


@dataclass(frozen=True)
class DPSettings:
    enabled: bool = False
    noise_multiplier: float = 1.0
    clipping_norm: float = 0.1
    target_delta: float = 1e-5  # epsilon is reported at this delta
    max_epsilon: float | None = None  # the budget: training stops before a round would exceed it


@dataclass(frozen=True)
class ValidationSettings:
    """The gate before signing (server/validation.py): sites score the candidate on their own
    validation split against the last accepted model; the server signs only if it passes."""

    enabled: bool = True
    quorum: int | str = AUTO  # sites that must answer; auto = federation.min_sites
    max_loss_ratio: float = 1.5  # per stage: candidate val loss <= this x the accepted model's
    batches: int = 2  # val batches per stage and model at each site
    # The quick privacy/utility check (site verifier and findings classifier, output vs input):
    images: int = 16  # val films each site anonymizes with each model; 0 = losses only
    max_reid_auc: float = 0.75  # absolute, while a site has no accepted model installed
    min_diagnosis_agreement: float = 0.6  # absolute, likewise
    max_reid_auc_increase: float = 0.05  # relative to the sites' installed (last accepted) model
    max_agreement_drop: float = 0.1  # relative, likewise
    timeout_s: float = 900.0  # wait for the sites' scores (a site without judges trains them first)

    def quorum_for(self, min_sites: int) -> int:
        return min_sites if self.quorum == AUTO else int(self.quorum)


@dataclass(frozen=True)
class FederationSettings:
    sites: int = 3
    min_sites: int = 2
    rounds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 1))
    local_steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 1))
    server_lr: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 1.0))
    round_retries: int = 1
    max_site_weight: int = 10_000  # a site's registered weight (declared examples) is capped here
    wait_for_sites_s: float = 600.0
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    dp: DPSettings = field(default_factory=DPSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    cpus_per_site: float = 1.0
    gpus_per_site: float = 0.0
    pace_sites: bool = True  # simulation: virtual sites keep in step (privdiff_core/training/pacing.py)

    @property
    def plan(self) -> list[tuple[str, int]]:
        """(stage, rounds) in training order; stages with 0 rounds are skipped."""
        return [(stage, self.rounds[stage]) for stage in STAGES if self.rounds[stage] > 0]

    @property
    def total_rounds(self) -> int:
        return sum(rounds for _, rounds in self.plan)

    def summary(self) -> dict[str, Any]:
        """What the signed anonymizer's metadata records about the federated run."""
        return {
            "rounds": dict(self.rounds),
            "local_steps": dict(self.local_steps),
            "server_lr": dict(self.server_lr),
            "secagg": self.secagg.enabled,
            "dp": {
                "enabled": self.dp.enabled,
                "noise_multiplier": self.dp.noise_multiplier,
                "clipping_norm": self.dp.clipping_norm,
                "target_delta": self.dp.target_delta,
                "max_epsilon": self.dp.max_epsilon,
            }
            if self.dp.enabled
            else {"enabled": False},
        }


def _positive_int(value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FederationError(f"federation.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _fraction(value: Any, key: str) -> float:
    """A number in [0, 1] (an AUC, an agreement or a change of one)."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise FederationError(f"federation.{key} must be a number in [0, 1], got {value!r}") from err
    if not 0.0 <= number <= 1.0:
        raise FederationError(f"federation.{key} must be a number in [0, 1], got {value!r}")
    return number


def _server_lr(value: Any, stage: str) -> float:
    """A server step on the averaged update: positive, and beyond 10 it is a typo, not a choice."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise FederationError(f"federation.server_lr.{stage} must be a number, got {value!r}") from err
    if not 0.0 < number <= 10.0:
        raise FederationError(f"federation.server_lr.{stage} must be in (0, 10], got {value!r}")
    return number


def _auto_or(value: Any, key: str, kind: type) -> Any:
    if value == AUTO:
        return AUTO
    try:
        number = kind(value)
    except (TypeError, ValueError) as err:
        raise FederationError(f"federation.{key} must be 'auto' or a {kind.__name__}, got {value!r}") from err
    if number <= 0:
        raise FederationError(f"federation.{key} must be positive, got {value!r}")
    return number


def federation_settings(cfg: DictConfig) -> FederationSettings:
    """Read and check `cfg.federation`; errors name the key to fix."""
    if "federation" not in cfg:
        raise FederationError("the config has no `federation:` section (see configs/tiny.yaml)")
    raw = OmegaConf.to_container(cfg.federation, resolve=True)
    assert isinstance(raw, dict)
    rounds = {s: _positive_int(raw.get("rounds", {}).get(s, 0), f"rounds.{s}") for s in STAGES}
    steps = {s: _positive_int(raw.get("local_steps", {}).get(s, 1), f"local_steps.{s}", 1) for s in STAGES}
    server_lr = {s: _server_lr(raw.get("server_lr", {}).get(s, 1.0), s) for s in STAGES}
    if sum(rounds.values()) == 0:
        raise FederationError("federation.rounds: every stage has 0 rounds, nothing to train")
    sites = _positive_int(raw.get("sites", 3), "sites", 1)
    min_sites = _positive_int(raw.get("min_sites", 2), "min_sites", 1)
    sa = raw.get("secagg", {}) or {}
    secagg = SecAggSettings(
        enabled=bool(sa.get("enabled", True)),
        num_shares=_auto_or(sa.get("num_shares", AUTO), "secagg.num_shares", int),
        reconstruction_threshold=_auto_or(
            sa.get("reconstruction_threshold", AUTO), "secagg.reconstruction_threshold", int
        ),
        clipping_range=_auto_or(sa.get("clipping_range", AUTO), "secagg.clipping_range", float),
        initial_clipping_range=float(sa.get("initial_clipping_range", 8.0)),
        max_clipping_range=float(sa.get("max_clipping_range", 8.0)),
        range_headroom_bits=_positive_int(sa.get("range_headroom_bits", 2), "secagg.range_headroom_bits"),
        timeout_s=None if sa.get("timeout_s") is None else float(sa["timeout_s"]),
        implementation=str(sa.get("implementation", "privdiff")),
    )
    if not 0 < secagg.initial_clipping_range <= secagg.max_clipping_range:
        raise FederationError(
            "federation.secagg: initial_clipping_range must be positive and at most max_clipping_range "
            f"({secagg.initial_clipping_range} vs {secagg.max_clipping_range})"
        )
    if secagg.implementation not in ("privdiff", "flower"):
        raise FederationError(
            f"federation.secagg.implementation must be privdiff or flower, got {secagg.implementation!r}"
        )
    if secagg.enabled and min_sites < 2:
        raise FederationError("federation.min_sites must be >= 2 with SecAgg+ (a sum of one hides nothing)")
    dp_raw = raw.get("dp", {}) or {}
    dp = DPSettings(
        enabled=bool(dp_raw.get("enabled", False)),
        noise_multiplier=float(dp_raw.get("noise_multiplier", 1.0)),
        clipping_norm=float(dp_raw.get("clipping_norm", 0.1)),
        target_delta=float(dp_raw.get("target_delta", 1e-5)),
        max_epsilon=None if dp_raw.get("max_epsilon") is None else float(dp_raw["max_epsilon"]),
    )
    if dp.enabled and (dp.clipping_norm <= 0 or dp.noise_multiplier <= 0):
        raise FederationError(
            "federation.dp: clipping_norm and noise_multiplier must be > 0 (no noise, no epsilon)"
        )
    if dp.enabled and not (0 < dp.target_delta < 1 and (dp.max_epsilon is None or dp.max_epsilon > 0)):
        raise FederationError(
            "federation.dp: target_delta must be in (0, 1) and max_epsilon positive (or null)"
        )
    val_raw = raw.get("validation", {}) or {}
    validation = ValidationSettings(
        enabled=bool(val_raw.get("enabled", True)),
        quorum=_auto_or(val_raw.get("quorum", AUTO), "validation.quorum", int),
        max_loss_ratio=float(val_raw.get("max_loss_ratio", 1.5)),
        batches=_positive_int(val_raw.get("batches", 2), "validation.batches", 1),
        images=_positive_int(val_raw.get("images", 16), "validation.images"),
        max_reid_auc=_fraction(val_raw.get("max_reid_auc", 0.75), "validation.max_reid_auc"),
        min_diagnosis_agreement=_fraction(
            val_raw.get("min_diagnosis_agreement", 0.6), "validation.min_diagnosis_agreement"
        ),
        max_reid_auc_increase=_fraction(
            val_raw.get("max_reid_auc_increase", 0.05), "validation.max_reid_auc_increase"
        ),
        max_agreement_drop=_fraction(val_raw.get("max_agreement_drop", 0.1), "validation.max_agreement_drop"),
        timeout_s=float(val_raw.get("timeout_s", 900.0)),
    )
    if validation.max_loss_ratio <= 0:
        raise FederationError("federation.validation.max_loss_ratio must be positive")
    if validation.timeout_s <= 0:
        raise FederationError("federation.validation.timeout_s must be positive")
    if validation.images == 1:
        raise FederationError("federation.validation.images must be 0 (no privacy check) or at least 2")
    sim = raw.get("simulation", {}) or {}
    return FederationSettings(
        sites=sites,
        min_sites=min_sites,
        rounds=rounds,
        local_steps=steps,
        server_lr=server_lr,
        round_retries=_positive_int(raw.get("round_retries", 1), "round_retries"),
        max_site_weight=_positive_int(raw.get("max_site_weight", 10_000), "max_site_weight", 1),
        wait_for_sites_s=float(raw.get("wait_for_sites_s", 600.0)),
        secagg=secagg,
        dp=dp,
        validation=validation,
        cpus_per_site=float(sim.get("cpus_per_site", 1.0)),
        gpus_per_site=float(sim.get("gpus_per_site", 0.0)),
        pace_sites=bool(sim.get("pace_sites", True)),
    )
