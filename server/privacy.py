"""The privacy budget of a DP run: Flower's RDP accountant, composed round by round.

Flower 1.42's new-API DP strategies take an `RdpAccountant`, but SecAgg+ runs only through the
legacy workflow (FIELD-NOTES.md), so the round loop does the accounting itself with the same
accountant. Every site takes part in every round (no sampling amplification), a site's whole
update is what neighbouring datasets differ in (add-or-remove-one site), and each accepted
round releases the mean of the sites' L2-clipped updates plus Gaussian noise of std
noise_multiplier * clipping_norm / sites_noised_for (Flower's client-side fixed-clipping
wrapper). When fewer sites than that answer, the mean's sensitivity grows and the round is
accounted with the smaller effective multiplier noise_multiplier * sites / sites_noised_for.

Before each round the ledger asks whether that round would take epsilon (at target_delta) past
max_epsilon; if so training stops there and the model trained so far is validated and signed,
its metadata saying so. Epsilon goes into the round history, `OUT/privacy.json` (the server's
audit trail) and the signed model's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)

from privdiff.server.settings import DPSettings

PRIVACY_FILE = "privacy.json"


class PrivacyLedger:
    def __init__(self, dp: DPSettings, population: int, saved: dict[str, Any] | None = None) -> None:
        self.dp = dp
        self.population = population
        self.accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=dp.target_delta,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
                max_epsilon=dp.max_epsilon,
            )
        )
        if saved:
            self.accountant.load_state_dict(saved)

    def event(self, sites: int, noised_for: int) -> GaussianPrivacyEvent:
        """One accepted round of `sites` updates whose noise was sized for `noised_for` sites."""
        multiplier = self.dp.noise_multiplier * min(sites, noised_for) / noised_for
        return GaussianPrivacyEvent(multiplier, min(sites, self.population), self.population)

    def would_exceed(self, sites: int, noised_for: int) -> bool:
        if self.dp.max_epsilon is None:
            return False
        return self.accountant.would_exceed(self.event(sites, noised_for))

    def record(self, sites: int, noised_for: int) -> float:
        """Compose one accepted round; returns epsilon spent so far."""
        self.accountant.compose(self.event(sites, noised_for))
        return self.epsilon

    @property
    def epsilon(self) -> float:
        return self.accountant.get_epsilon(self.dp.target_delta) if self.accountant.num_releases else 0.0

    def summary(self, budget_spent: bool) -> dict[str, Any]:
        """What the signed model's metadata and privacy.json say about the budget."""
        return {
            "epsilon": self.epsilon,
            "delta": self.dp.target_delta,
            "max_epsilon": self.dp.max_epsilon,
            "releases": self.accountant.num_releases,
            "accounting": "rdp (Flower RdpAccountant), add-or-remove-one site, no sampling amplification",
            "budget_spent": budget_spent,
        }

    def state_dict(self) -> dict[str, Any]:
        return self.accountant.state_dict()

    def write(self, out_dir: Path, history: list[dict[str, Any]], budget_spent: bool) -> None:
        """OUT/privacy.json: epsilon after every accepted round, written atomically."""
        rounds = [
            {"round": h["round"], "stage": h["stage"], "epsilon": h["epsilon"]}
            for h in history
            if "epsilon" in h
        ]
        tmp = out_dir / f".{PRIVACY_FILE}.tmp"
        tmp.write_text(json.dumps({**self.summary(budget_spent), "rounds": rounds}, indent=2))
        tmp.replace(out_dir / PRIVACY_FILE)
