"""The federated plan as a Flower workflow: describe, train stage by stage, sign, distribute.

This is Flower's `DefaultWorkflow` round loop (legacy strategy + `LegacyContext`, the only
way SecAgg+ runs in flwr 1.42) grown to what privdiff needs: two stages with their own global
state, a fresh `SecAggPlusWorkflow` per round (its share counts follow the sites present and
its clipping range follows the updates), a checkpoint after every round, resume, and a last
message that hands every site the signed anonymizer.

A malicious site is contained, not trusted: its weight comes from the registry (what it declared
when it joined, capped), every value it may add is bounded by the round's range, and an unmasked
sum that in-range updates with the registered weights could not produce is rejected (never
averaged in). The round then runs again without one site at a time; the site whose absence makes
it possible is excluded from the rest of the run. When no such site exists (several attackers)
the run stops at the last good checkpoint, unsigned. See docs/threat-model.md.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from privdiff.common import protocol
from privdiff.common.distribution import model_version, pack_folder
from privdiff.common.errors import FederationError, ImpossibleAggregateError
from privdiff.common.flower_internals import (
    MAIN_CONFIGS_RECORD,
    MAIN_PARAMS_RECORD,
    WorkflowKey,
    compat,
    default_fit_workflow,
    start_update_client_manager_thread,
)
from privdiff.common.npy import from_parameters, to_parameters
from privdiff.common.secagg import FLOWER_VECTOR, PRIVDIFF_VECTOR
from privdiff.common.task import FederatedTask
from privdiff.common.updates import StateLayout, apply_server_update, flatten_state, next_clipping_range
from privdiff.server.checkpoint import ServerState, config_fingerprint, load_checkpoint, save_checkpoint
from privdiff.server.privacy import PrivacyLedger
from privdiff.server.secagg import PrivdiffSecAggPlusWorkflow
from privdiff.server.settings import AUTO, FederationSettings
from privdiff.server.strategy import UpdateFedAvg, weighted_metrics
from privdiff.server.validation import REJECTED_DIR, VERDICT_FILE, verdict
from privdiff_core.signing import load_private_key, sign_model

ANONYMIZER_DIR = "anonymizer"
DISTRIBUTION_FILE = "distribution.json"
QUANTIZATION_RANGE = 2**22  # SecAgg+'s default grid: 2**22 levels across +-clipping_range


@dataclass(frozen=True)
class SiteInfo:
    node_id: int
    examples: int
    can_install: bool


def _print(line: str) -> None:
    print(line, flush=True)


class FederatedPlan:
    """Callable `(grid, context)`: the whole federated run of one config (see module doc)."""

    def __init__(
        self,
        cfg: DictConfig,
        settings: FederationSettings,
        task: FederatedTask,
        out_dir: Path,
        signing_key: Path,
        progress: Callable[[str], None] = _print,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.task = task
        self.out_dir = Path(out_dir)
        self.signing_key = Path(signing_key)
        self.progress = progress
        self.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        self._ledger: PrivacyLedger | None = None  # set per run (DP only)
        self._noised_for = 0

    # ----------------------------------------------------------------------------- entry point
    def __call__(self, grid: Grid, context: Context) -> None:
        private_key = load_private_key(self.signing_key)  # fail before training, not after
        self.out_dir.mkdir(parents=True, exist_ok=True)
        models = self.task.build_models(self.cfg)
        state = load_checkpoint(self.out_dir, self.cfg)
        if state is None:
            state = ServerState(
                models=models.state_dict(),
                rounds_done=dict.fromkeys(self.task.stages, 0),
                clipping_range=None,
                config_fingerprint=config_fingerprint(self.cfg),
            )
        else:
            models.load_state_dict(state.models)
            done = sum(state.rounds_done.values())
            self.progress(f"resuming {self.out_dir}: {done} of {self.settings.total_rounds} rounds done")

        sites = self._describe(grid, models)
        self._register(state, sites)
        state.sites = max(state.sites, len(sites))
        self._ledger = self._privacy_ledger(state)
        self._noised_for = len(sites)  # the DP wrapper sizes its noise for the sites that joined
        if any(state.rounds_done.get(stage, 0) < rounds for stage, rounds in self.settings.plan):
            strategy = UpdateFedAvg(self.settings.min_sites)
            strategy.site_weights, strategy.excluded = state.site_weights, set(state.excluded)
            legacy = LegacyContext(
                context,
                config=ServerConfig(num_rounds=self.settings.total_rounds),
                strategy=self._wrap_dp(strategy, len(sites)),
                client_manager=SimpleClientManager(),
            )
            thread, stop, registered = start_update_client_manager_thread(grid, legacy.client_manager)
            registered.wait()
            try:
                max_weight = float(max(state.site_weights.values()))
                self._train(grid, legacy, strategy, models, state, max_weight)
            finally:
                stop.set()
                thread.join()
        excluded = set(state.excluded)
        eligible = [s.node_id for s in sites if s.node_id not in excluded]
        extra = {"validation": self._validation_gate(grid, models, state, eligible)}
        if self._ledger is not None:
            extra["privacy"] = self._ledger.summary(bool(state.privacy.get("budget_spent")))
        folder = self._write_anonymizer(models, state, private_key, extra)
        self._distribute(
            grid, folder, [s.node_id for s in sites if s.can_install and s.node_id not in excluded]
        )

    def _privacy_ledger(self, state: ServerState) -> PrivacyLedger | None:
        """DP runs account every accepted round (server/privacy.py); resumed from the checkpoint."""
        if not self.settings.dp.enabled:
            return None
        population = int(state.privacy.get("population", max(self.settings.sites, len(state.site_weights))))
        ledger = PrivacyLedger(self.settings.dp, population, state.privacy.get("accountant"))
        state.privacy = {**state.privacy, "population": population, "accountant": ledger.state_dict()}
        return ledger

    def _budget_allows_a_round(self, state: ServerState, global_round: int) -> bool:
        """False (and training stops) if the next round could take epsilon past max_epsilon,
        counted as if only min_sites answered (the costliest round the plan accepts)."""
        ledger = self._ledger
        if ledger is None or not ledger.would_exceed(self.settings.min_sites, self._noised_for):
            return True
        state.privacy["budget_spent"] = True
        save_checkpoint(self.out_dir, state)
        ledger.write(self.out_dir, state.history, True)
        self.progress(
            f"privacy budget: round {global_round} could take epsilon past federation.dp.max_epsilon="
            f"{self.settings.dp.max_epsilon:g} (spent {ledger.epsilon:.3g} at delta "
            f"{self.settings.dp.target_delta:g}); training stops here"
        )
        return False

    def _account(self, state: ServerState, entry: dict[str, Any]) -> None:
        """Compose an accepted DP round; its epsilon goes into the history and privacy.json."""
        if self._ledger is None:
            return
        entry["epsilon"] = self._ledger.record(int(entry.get("sites", 0)), self._noised_for)
        state.privacy["accountant"] = self._ledger.state_dict()

    def _wrap_dp(self, strategy: UpdateFedAvg, sites: int) -> Any:
        """Flower's central-DP wrapper; the noise is sized for the sites that joined."""
        dp = self.settings.dp
        if not dp.enabled:
            return strategy
        return DifferentialPrivacyClientSideFixedClipping(
            strategy, dp.noise_multiplier, dp.clipping_norm, num_sampled_clients=sites
        )

    # ------------------------------------------------------------------------------- describe
    def _wait_for_sites(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self.settings.wait_for_sites_s
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= self.settings.min_sites:
                return nodes
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(nodes)} of federation.min_sites={self.settings.min_sites} sites connected "
                    f"within {self.settings.wait_for_sites_s:.0f} s"
                )
            time.sleep(1.0)

    def _describe(self, grid: Grid, models: torch.nn.Module) -> list[SiteInfo]:
        """Ask every connected site for its example count and model layouts (round 0)."""
        nodes = self._wait_for_sites(grid)
        expected = [StateLayout.of(self.task.stage_state(models, s)).fingerprint for s in self.task.stages]
        content = RecordDict({protocol.CONFIG_RECORD: ConfigRecord({"config-yaml": self.config_yaml})})
        messages = [
            Message(content=content, dst_node_id=n, message_type=protocol.DESCRIBE, group_id="0")
            for n in nodes
        ]
        replies = grid.send_and_receive(messages, timeout=self.settings.secagg.timeout_s)
        sites, problems = [], []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                problems.append(f"site {node}: {reply.error.reason}")
                continue
            record = reply.content.config_records[protocol.CONFIG_RECORD]
            if list(record["layouts"]) != expected:
                problems.append(
                    f"site {node}: its model layout differs from the server's (another privdiff version?)"
                )
                continue
            sites.append(SiteInfo(node, int(record["examples"]), bool(record["can-install"])))
        for problem in problems:
            self.progress(f"  ! {problem}")
        if len(sites) < self.settings.min_sites:
            raise FederationError(
                f"{len(sites)} sites are ready, federation.min_sites={self.settings.min_sites}: "
                + ("; ".join(problems) or "no answers")
            )
        total = sum(s.examples for s in sites)
        mode = "SecAgg+" if self.settings.secagg.enabled else "plain FedAvg (no secure aggregation)"
        self.progress(
            f"{len(sites)} sites ready, {total} training images ({mode}"
            + (", DP on" if self.settings.dp.enabled else "")
            + ")"
        )
        return sites

    def _register(self, state: ServerState, sites: list[SiteInfo]) -> None:
        """Enrol sites the run has not seen: weight = declared examples, capped. A registered
        site keeps its weight for the whole run (and across a resume), whatever it declares later.
        Under DP every site weighs 1: the noise is sized for a plain mean of clipped updates, whose
        sensitivity a heavier site would exceed."""
        cap = self.settings.max_site_weight
        for site in sites:
            if site.node_id in state.site_weights:
                continue
            state.site_weights[site.node_id] = 1 if self.settings.dp.enabled else min(site.examples, cap)
            if site.examples > cap:
                self.progress(
                    f"  ! site {site.node_id} declared {site.examples} examples: registered with "
                    f"federation.max_site_weight={cap}"
                )

    # ---------------------------------------------------------------------------------- train
    def _clipping_range(self, state: ServerState) -> float:
        secagg, dp = self.settings.secagg, self.settings.dp
        if dp.enabled:  # an L2-clipped update has no value beyond the norm
            return float(2.0 ** np.ceil(np.log2(dp.clipping_norm)))
        if secagg.clipping_range != AUTO:
            return float(secagg.clipping_range)
        return state.clipping_range or secagg.initial_clipping_range

    def _secagg_vector(self) -> str:
        if not self.settings.secagg.enabled:
            return ""
        return PRIVDIFF_VECTOR if self.settings.secagg.implementation == "privdiff" else FLOWER_VECTOR

    def _fit_workflow(
        self, legacy: LegacyContext, clipping_range: float, max_weight: float, site_weights: dict[int, int]
    ) -> Any:
        if not self.settings.secagg.enabled:
            return default_fit_workflow
        shares, threshold = self.settings.secagg.shares_for(legacy.client_manager.num_available())
        if shares == 2:  # Flower wants int shares > 2; fractions of 1.0 mean "all" for two sites
            shares_arg: int | float = 1.0
            threshold_arg: int | float = 1.0
        else:
            shares_arg, threshold_arg = shares, threshold
        workflow = (
            PrivdiffSecAggPlusWorkflow
            if self.settings.secagg.implementation == "privdiff"
            else SecAggPlusWorkflow
        )
        return workflow(
            num_shares=shares_arg,
            reconstruction_threshold=threshold_arg,
            max_weight=max_weight,
            clipping_range=clipping_range,
            quantization_range=QUANTIZATION_RANGE,
            timeout=self.settings.secagg.timeout_s,
            **({"site_weights": site_weights} if workflow is PrivdiffSecAggPlusWorkflow else {}),
        )

    def _train(
        self,
        grid: Grid,
        legacy: LegacyContext,
        strategy: UpdateFedAvg,
        models: torch.nn.Module,
        state: ServerState,
        max_weight: float,
    ) -> None:
        total = self.settings.total_rounds
        global_round = sum(state.rounds_done.values())
        for stage, rounds in self.settings.plan:
            for stage_round in range(state.rounds_done.get(stage, 0) + 1, rounds + 1):
                if not self._budget_allows_a_round(state, global_round + 1):
                    return
                global_round += 1
                started = time.perf_counter()
                clip = self._clipping_range(state) if self.settings.secagg.enabled else 0.0
                discarded: list[dict[str, Any]] = []
                rejected: list[dict[str, Any]] = []
                while True:
                    update, summary = self._checked_round(
                        (stage, stage_round, global_round, clip, max_weight),
                        rejected,
                        state,
                        grid,
                        legacy,
                        strategy,
                        models,
                    )
                    exps = [int(m.get(protocol.METRIC_RANGE_EXP, -40)) for _, m in strategy.last.metrics]
                    if not self._rerun_with_wider_range(summary, discarded):
                        break
                    # Clipped values would be wrong numbers in the average (a latent scale measured
                    # afresh, a large first step): redo the round with a range that holds them all.
                    # Local training is seeded by (seed, round, site), so the sites recompute the
                    # same updates; nothing of the discarded round is applied.
                    wider = self._next_range(exps)
                    discarded.append({"clipping_range": clip, "clipped-values": summary["clipped-values"]})
                    self.progress(
                        f"  ! round {global_round} ({stage}): {summary['clipped-values']} update "
                        f"values beyond +-{clip:.3g}; discarded, running it again with +-{wider:.3g}"
                    )
                    clip = wider
                self._apply(models, stage, update)
                state.rounds_done[stage] = stage_round
                state.clipping_range = self._next_range(exps) if stage_round < rounds else None
                state.history.append(
                    {
                        "round": global_round,
                        "stage": stage,
                        "stage_round": stage_round,
                        "seconds": time.perf_counter() - started,
                        "clipping_range": clip,
                        "discarded": discarded,
                        "rejected": rejected,
                        **summary,
                    }
                )
                self._account(state, state.history[-1])
                state.models = models.state_dict()
                state.completed = all(state.rounds_done[s] >= r for s, r in self.settings.plan)
                save_checkpoint(self.out_dir, state)
                if self._ledger is not None:
                    self._ledger.write(self.out_dir, state.history, False)
                self._report_round(state.history[-1], rounds, total)

    def _next_range(self, range_exponents: list[int]) -> float:
        """The automatic range, never beyond secagg.max_clipping_range: sites report their own
        ranges, so one site's claim must not widen every site's influence without bound."""
        return next_clipping_range(
            range_exponents,
            headroom=self.settings.secagg.range_headroom_bits,
            bounds=(2.0**-24, self.settings.secagg.max_clipping_range),
        )

    def _checked_round(
        self,
        round_args: tuple[str, int, int, float, float],
        rejected: list[dict[str, Any]],
        state: ServerState,
        grid: Grid,
        legacy: LegacyContext,
        strategy: UpdateFedAvg,
        models: torch.nn.Module,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """`_run_round`, and when its sum is impossible: the round again without one of the summed
        sites at a time, in node-id order, while enough sites remain. The first possible sum is
        the round's; its missing site is excluded for the rest of the run. Every rejected sum is
        logged and listed in `rejected` (the round's history), none is applied."""
        stage, _, global_round, _, _ = round_args
        try:
            return self._run_round(grid, legacy, strategy, models, *round_args)
        except ImpossibleAggregateError as err:
            suspects = sorted(err.sites)
            self._log_rejection(rejected, global_round, stage, err, None)
        floor = max(self.settings.min_sites, 2)
        for suspect in suspects:
            if len(suspects) - 1 < floor:
                break
            strategy.excluded.add(suspect)
            try:
                result = self._run_round(grid, legacy, strategy, models, *round_args)
            except ImpossibleAggregateError as err:
                strategy.excluded.discard(suspect)
                self._log_rejection(rejected, global_round, stage, err, suspect)
                continue
            state.excluded.append(suspect)
            self.progress(
                f"  ! round {global_round} ({stage}): without site {suspect} the sum is possible; site "
                f"{suspect} is EXCLUDED from the rest of this run"
            )
            return result
        raise FederationError(
            f"round {global_round} ({stage}): every SecAgg+ sum was impossible, also without any single "
            f"one of the sites {suspects} (more than one attacker, or fewer than {floor} sites left "
            "without one): rolled back to the last good checkpoint, nothing signed; see the log"
        )

    def _log_rejection(
        self,
        rejected: list[dict[str, Any]],
        global_round: int,
        stage: str,
        err: ImpossibleAggregateError,
        without: int | None,
    ) -> None:
        rejected.append({"without": without, "sites": sorted(err.sites), "reason": err.reason})
        self.progress(
            f"  ! round {global_round} ({stage}): REJECTED "
            + (f"(without site {without}) " if without is not None else "")
            + f"{err.reason}; nothing of it is applied"
        )

    def _rerun_with_wider_range(self, summary: dict[str, Any], discarded: list[dict[str, Any]]) -> bool:
        """Only an automatic range is widened, at most twice per round (the second time only if
        local training is not reproducible, e.g. non-deterministic GPU kernels)."""
        automatic = self.settings.secagg.clipping_range == AUTO and not self.settings.dp.enabled
        return (
            self.settings.secagg.enabled
            and automatic
            and summary.get("clipped-values", 0) > 0
            and len(discarded) < 2
        )

    def _run_round(
        self,
        grid: Grid,
        legacy: LegacyContext,
        strategy: UpdateFedAvg,
        models: torch.nn.Module,
        stage: str,
        stage_round: int,
        global_round: int,
        clip: float,
        max_weight: float,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One round: send the global state, collect the (masked) updates; returns the averaged
        update (not applied yet) and the round's metrics."""
        stage_state = self.task.stage_state(models, stage)
        layout = StateLayout.of(stage_state)
        global_vector = flatten_state(stage_state, layout)
        arrays = [global_vector]
        # the global result of earlier stages (the frozen VAE) travels with every train message
        earlier = self.task.stages[: self.task.stages.index(stage)]
        frozen = [
            flatten_state(st, StateLayout.of(st))
            for st in (self.task.stage_state(models, s) for s in earlier)
        ]
        if frozen:
            arrays.append(np.concatenate(frozen))
        strategy.fit_config = protocol.FitConfig(
            stage=stage,
            round=global_round,
            stage_round=stage_round,
            local_steps=self.settings.local_steps[stage],
            layout=layout.fingerprint,
            clipping_range=clip,
            seed=int(self.cfg.seed),
            config_yaml=self.config_yaml,
            secagg_vector=self._secagg_vector(),
        ).to_record()
        for attempt in range(self.settings.round_retries + 1):
            sent = compat.parameters_to_arrayrecord(to_parameters(arrays), keep_input=True)
            legacy.state.array_records[MAIN_PARAMS_RECORD] = sent
            legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
                {WorkflowKey.CURRENT_ROUND: global_round, WorkflowKey.START_TIME: time.time()}
            )
            self._fit_workflow(legacy, clip, max_weight, strategy.site_weights)(grid, legacy)
            result = legacy.state.array_records[MAIN_PARAMS_RECORD]
            if result is not sent:
                break
            self.progress(
                f"  ! round {global_round} ({stage}) got too few usable updates "
                f"({len(strategy.last.metrics)} of {strategy.last.sampled} sites)"
                + (", running it again" if attempt < self.settings.round_retries else "")
            )
        else:
            raise FederationError(
                f"round {global_round} failed {self.settings.round_retries + 1} times: fewer than "
                f"federation.min_sites={self.settings.min_sites} sites (or than SecAgg+'s reconstruction "
                "threshold) answered"
            )
        update = from_parameters(compat.arrayrecord_to_parameters(result, keep_input=True))[0]
        if update.shape != global_vector.shape or not np.all(np.isfinite(update)):
            raise FederationError(f"round {global_round}: the aggregated update is malformed or not finite")
        return update, weighted_metrics(strategy.last.metrics) | {"dropped": strategy.last.dropped}

    def _apply(self, models: torch.nn.Module, stage: str, update: np.ndarray) -> None:
        """global <- global + server_lr x averaged update on the weights, plain average on the
        float buffers (`apply_server_update`)."""
        weights = {name for name, _ in models.named_parameters()}
        new_state = apply_server_update(
            self.task.stage_state(models, stage), update, weights, self.settings.server_lr[stage]
        )
        self.task.load_stage_state(models, stage, new_state)

    def _report_round(self, entry: dict[str, Any], stage_rounds: int, total: int) -> None:
        line = (
            f"[{entry['stage']} {entry['stage_round']}/{stage_rounds}] round {entry['round']}/{total}: "
            f"loss {entry.get('loss', float('nan')):.4f} | {entry.get('sites', 0)} sites"
            + (f", {entry['dropped']} dropped" if entry.get("dropped") else "")
            + f" | {entry['seconds']:.1f} s"
        )
        if "epsilon" in entry:
            line += f" | DP epsilon {entry['epsilon']:.3g} (delta {self.settings.dp.target_delta:g})"
        if self.settings.secagg.enabled:
            line += f" | SecAgg+ range +-{entry['clipping_range']:.3g}"
            if entry.get("clipped-values"):
                line += f", {entry['clipped-values']} values CLIPPED to the fixed range"
        self.progress(line)

    # ----------------------------------------------------------------------- sign + distribute
    def _validation_gate(
        self, grid: Grid, models: torch.nn.Module, state: ServerState, nodes: list[int]
    ) -> dict[str, Any]:
        """The sites score the candidate (server/validation.py); returns the verdict for the
        model's metadata, or keeps the candidate unsigned and stops the run."""
        gate = self.settings.validation
        if not gate.enabled:
            return {"enabled": False}
        stages = [stage for stage, _ in self.settings.plan]
        vector = np.concatenate(
            [
                flatten_state(st, StateLayout.of(st))
                for st in (self.task.stage_state(models, s) for s in self.task.stages)
            ]
        )
        content = RecordDict(
            {
                "candidate": ArrayRecord(array_dict={"state": Array(vector)}),
                protocol.CONFIG_RECORD: ConfigRecord(
                    {
                        "config-yaml": self.config_yaml,
                        "stages": stages,
                        "batches": gate.batches,
                        "images": gate.images,
                    }
                ),
            }
        )
        messages = [
            Message(content=content, dst_node_id=n, message_type=protocol.VALIDATE, group_id="validation")
            for n in nodes
        ]
        scores = []
        for reply in grid.send_and_receive(messages, timeout=gate.timeout_s):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.progress(f"  ! site {node} did not score the candidate: {reply.error.reason}")
                continue
            record = dict(reply.content.config_records[protocol.CONFIG_RECORD])
            scores.append(protocol.SiteScores.from_record(node, record, stages))
        result = verdict(scores, stages, gate, gate.quorum_for(self.settings.min_sites))
        summary = result.to_json()
        if not result.passed:
            folder = self.out_dir / REJECTED_DIR
            shutil.rmtree(folder, ignore_errors=True)
            self.task.save_anonymizer(
                models, self.cfg, folder, {"config": self.config_yaml, "validation": summary}
            )
            tmp = folder / f".{VERDICT_FILE}.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(folder / VERDICT_FILE)
            raise FederationError(
                "validation gate: the candidate was NOT signed or distributed ("
                + "; ".join(result.reasons)
                + f"); it is kept unsigned in {folder} for inspection"
            )
        losses = ", ".join(
            f"{s} {v['candidate_loss']:.4g} (accepted {v['accepted_loss']:.4g})"
            for s, v in result.stages.items()
        )
        checked = result.privacy.get("candidate")
        if checked:
            agreement = checked["diagnosis_agreement"]
            losses += (
                f"; re-ID AUC {checked['reid_auc']:.3g}, diagnosis agreement "
                + ("not measured" if agreement is None else f"{agreement:.3g}")
                + f" on {result.privacy['images']} films ({result.privacy['mode']})"
            )
        self.progress(f"validation gate passed at {result.sites} sites: val loss {losses}")
        return summary

    def _write_anonymizer(
        self, models: torch.nn.Module, state: ServerState, private_key: Any, extra: dict[str, Any]
    ) -> Path:
        """save_anonymizer with the global models, signed, swapped into place atomically."""
        folder = self.out_dir / ANONYMIZER_DIR
        tmp = self.out_dir / f".{ANONYMIZER_DIR}.tmp"
        old = self.out_dir / f".{ANONYMIZER_DIR}.old"
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        metadata = {
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": self.config_yaml,
            "sites": state.sites,
            **self.settings.summary(),
            **extra,
        }
        self.task.save_anonymizer(models, self.cfg, tmp, metadata)
        payload = sign_model(tmp, private_key, metadata)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        self.progress(f"anonymizer written and signed (key {payload['key_id']}): {folder}")
        return folder

    def _distribute(self, grid: Grid, folder: Path, nodes: list[int]) -> list[dict[str, Any]]:
        """Send the signed folder to every site; each verifies, installs and acknowledges."""
        version = model_version(folder)
        files = pack_folder(folder)
        content = RecordDict(
            {
                "anonymizer": ArrayRecord(array_dict={name: Array(data) for name, data in files.items()}),
                protocol.CONFIG_RECORD: ConfigRecord({"version": version}),
            }
        )
        messages = [
            Message(
                content=content,
                dst_node_id=n,
                message_type=protocol.INSTALL_ANONYMIZER,
                group_id="distribution",
            )
            for n in nodes
        ]
        replies = grid.send_and_receive(messages, timeout=self.settings.secagg.timeout_s)
        acks = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                acks.append({"node_id": node, "installed": False, "error": reply.error.reason})
            else:
                record = reply.content.config_records[protocol.CONFIG_RECORD]
                acks.append({"node_id": node, **{k: record[k] for k in ("installed", "version", "error")}})
        answered = {a["node_id"] for a in acks}
        acks += [{"node_id": n, "installed": False, "error": "no answer"} for n in nodes if n not in answered]
        ok = sum(1 for a in acks if a["installed"])
        self.progress(f"anonymizer {version} installed at {ok} of {len(nodes)} sites")
        for ack in acks:
            if not ack["installed"]:
                self.progress(f"  ! site {ack['node_id']} kept its previous model: {ack['error']}")
        tmp = self.out_dir / f".{DISTRIBUTION_FILE}.tmp"
        tmp.write_text(json.dumps({"version": version, "sites": acks}, indent=2))
        tmp.replace(self.out_dir / DISTRIBUTION_FILE)
        return acks
