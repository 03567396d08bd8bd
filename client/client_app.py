"""The Flower ClientApp run at every site (`privdiff.client.client_app:app`).

Per round, a site receives the global state of the stage being trained (one flat vector, plus
the frozen states of earlier stages), trains it on its own train split with `local_train`, and
answers with `local - global`, clipped on purpose to the round's range and masked by SecAgg+.
The images, labels and identities never leave the site; the update, the number of examples
and the metrics in common/protocol.py do.

Mods, outermost first:
    secure_aggregation_mod  runs SecAgg+ (common/secagg.py: Flower's protocol, with privdiff's
                            fast masked-vector path when the server uses it), and
                            refuses to send an unmasked update if the site requires SecAgg+
    update_mod              turns the trained weights into the clipped update (local - global)
    dp_clipping_mod         Flower's `fixedclipping_mod` when the server asked for DP clipping
The train handler itself speaks the legacy FitIns/FitRes layout SecAgg+ needs.

Where a site's data, model store and federation key live comes from a `SiteResolver`: Flower's
node_config in deployment (`privdiff-client start` fills it), the synthetic federation in
simulation (`partition-id` picks the site folder).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod import fixedclipping_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Parameters, Status

from privdiff.client.optimizer_store import OptimizerStore
from privdiff.client.site_log import event
from privdiff.common import protocol
from privdiff.common.errors import FederationError
from privdiff.common.flower_internals import (
    KEY_CLIPPING_NORM,
    RECORD_KEY_CONFIGS,
    ClientAppCallable,
    Mod,
    SecAggKey,
    SecAggStage,
    compat,
)
from privdiff.common.npy import NUMPY_STYPE, npy_bytes, npy_view, to_parameters
from privdiff.common.secagg import PRIVDIFF_VECTOR, secaggplus_mod, stash_update

if TYPE_CHECKING:
    import torch

    from privdiff.common.task import FederatedTask
    from privdiff_core.training.pacing import StepPacer

# torch, the model and the data code are imported inside the handlers: in deployment every
# message starts a fresh `flwr-clientapp` process, and three of SecAgg+'s four messages per
# round (key setup, key sharing, unmasking) never reach them; importing torch for those would
# add seconds to every round at every site.

# node_config keys (`privdiff-client start` writes them; TOML values on the SuperNode's command line)
NODE_DATA = "data"
NODE_MODEL_STORE = "model-store"
NODE_PUBLIC_KEY = "public-key"
NODE_CACHE_DIR = "cache-dir"
NODE_REQUIRE_SECAGG = "require-secagg"
NODE_VERIFIER = "verifier"  # the site's own judges (client/site_verifier.py), for the validation gate


@dataclass(frozen=True)
class Site:
    """One site's local facts; none of them is ever sent to the server."""

    data: Path
    model_store: Path
    public_key: Path | None
    cache_dir: Path  # decoded training images, this site's optimizer state between rounds
    require_secagg: bool
    seed_id: int  # mixes into the local training seed so sites draw different batches
    verifier: Path | None = None  # the site's own judges' folder (trained there when missing)
    pace_dir: Path | None = None  # simulation: the folder where virtual sites keep in step (StepPacer)

    def pacer(self, round_key: str) -> StepPacer | None:
        """This site's pacer for one run of training steps (`round_key`, e.g. "denoiser-7"), or None
        where the site has its machine to itself (deployment)."""
        if self.pace_dir is None:
            return None
        from privdiff_core.training.pacing import StepPacer

        return StepPacer(self.pace_dir, f"site-{self.seed_id}", round_key)


class SiteResolver(Protocol):
    def site(self, context: Context) -> Site: ...


@dataclass(frozen=True)
class NodeConfigSites:
    """Deployment: everything from the SuperNode's node_config."""

    def site(self, context: Context) -> Site:
        config = context.node_config
        if NODE_DATA not in config:
            raise FederationError(
                f"node_config has no {NODE_DATA!r}: start this site with `privdiff-client start --data DIR`"
            )
        store = Path(str(config.get(NODE_MODEL_STORE, Path(str(config[NODE_DATA])) / "model-store")))
        key = config.get(NODE_PUBLIC_KEY)
        cache = config.get(NODE_CACHE_DIR)
        verifier = config.get(NODE_VERIFIER)
        return Site(
            data=Path(str(config[NODE_DATA])),
            model_store=store,
            public_key=Path(str(key)) if key else None,
            cache_dir=Path(str(cache)) if cache else store / "cache",
            require_secagg=bool(config.get(NODE_REQUIRE_SECAGG, True)),
            seed_id=context.node_id % (2**31),
            verifier=Path(str(verifier)) if verifier else None,
        )


@dataclass(frozen=True)
class SimulatedSites:
    """Simulation: virtual site `partition-id` is the i-th site folder of a synthetic federation.

    `homes[i]` holds what a real site keeps locally: `model-store/`, `federation-public.pem`
    (the federation's public key as that site received it), a data cache and `verifier/` (the
    site's own judges).
    """

    site_dirs: tuple[Path, ...]
    homes: tuple[Path, ...]
    require_secagg: bool = False
    pace_dir: Path | None = None  # the sites share this machine's cores: keep their training in step

    def site(self, context: Context) -> Site:
        index = int(context.node_config["partition-id"])
        if not 0 <= index < len(self.site_dirs):
            raise FederationError(f"partition-id {index} but the federation has {len(self.site_dirs)} sites")
        home = self.homes[index]
        key = home / "federation-public.pem"
        return Site(
            data=self.site_dirs[index],
            model_store=home / "model-store",
            public_key=key if key.is_file() else None,
            cache_dir=home / "cache",
            require_secagg=self.require_secagg,
            seed_id=index,
            verifier=home / "verifier",
            pace_dir=self.pace_dir,
        )


# Per-process caches: Ray actors in simulation serve many messages, and a deployed site's
# process builds the model once per message; data comes from an on-disk cache there.
_CONFIGS: OrderedDict[str, Any] = OrderedDict()
_MODELS: OrderedDict[str, torch.nn.Module] = OrderedDict()
_DATA: OrderedDict[tuple[str, str], Any] = OrderedDict()
_CACHE_SIZE = 8


def _remember(cache: OrderedDict, key: Any, make: Any) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def _config_key(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


def _config(config_yaml: str) -> Any:
    """The task's config, parsed once per process (0.15 s a parse, two per train message), read-only
    because every message of the same config shares it."""
    from omegaconf import OmegaConf

    from privdiff_core.config import config_from_yaml

    def parse() -> Any:
        cfg = config_from_yaml(config_yaml)
        OmegaConf.set_readonly(cfg, True)
        return cfg

    return _remember(_CONFIGS, _config_key(config_yaml), parse)


def _models(task: FederatedTask, config_yaml: str) -> torch.nn.Module:
    return _remember(_MODELS, _config_key(config_yaml), lambda: task.build_models(_config(config_yaml)))


def _site_data(task: FederatedTask, site: Site, config_yaml: str) -> Any:
    cfg = _config(config_yaml)
    key = (str(site.data), f"{cfg.image_size}")
    return _remember(_DATA, key, lambda: task.load_site_data(site.data, cfg, site.cache_dir))


def _frozen_layout(task: FederatedTask, models: torch.nn.Module, stage: str) -> list[tuple[str, Any]]:
    """Earlier stages, whose global state comes along with every train message of `stage`."""
    from privdiff.common.updates import StateLayout

    earlier = task.stages[: task.stages.index(stage)]
    return [(s, StateLayout.of(task.stage_state(models, s))) for s in earlier]


def _schedule_span(cfg: Any, fit: protocol.FitConfig) -> tuple[float, float]:
    """The part of the stage's learning-rate schedule this round's local steps cover: the stage's
    R rounds split it evenly, so a decaying schedule (train.<stage>.lr_schedule) reaches its end
    in the last round, as `privdiff train` does in its last step."""
    rounds = max(int(cfg.federation.rounds[fit.stage]), fit.stage_round)
    return (fit.stage_round - 1) / rounds, fit.stage_round / rounds


def _is_train(msg: Message) -> bool:
    return msg.metadata.message_type.split(".")[0] == MessageType.TRAIN


def registered_weight(fit_config: dict, counted: int) -> int:
    """The weight this site's update carries: the one the federation registered for it when it
    joined (the server checks the SecAgg+ sum against the registered weights, so a site that
    weighted by today's count would make the round impossible), or the count itself from a
    server that sends no registered weight."""
    return int(fit_config.get(protocol.SITE_WEIGHT, counted))


def make_client_app(
    sites: SiteResolver | None = None,
    task: FederatedTask | None = None,
    extra_mods: Sequence[Mod] = (),
) -> ClientApp:
    """A ClientApp for `sites` training `task` (default: deployment sites, PrivDiff-Net).

    `extra_mods` run outermost, e.g. Flower's `message_size_mod` to measure traffic.
    """
    sites = sites or NodeConfigSites()
    chosen_task = task

    def the_task() -> FederatedTask:
        nonlocal chosen_task
        if chosen_task is None:
            from privdiff.common.task import PrivdiffTask

            chosen_task = PrivdiffTask()
        return chosen_task

    def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not _is_train(msg):
            return call_next(msg, context)
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(SecAggKey.STAGE)  # the mod pops it
            reply = secaggplus_mod(msg, context, call_next)
            if stage == SecAggStage.COLLECT_MASKED_VECTORS and not reply.has_error():
                event("update sent masked (SecAgg+): the server sees only the sum over sites")
            return reply
        if sites.site(context).require_secagg:
            raise FederationError(
                "this site requires secure aggregation and refuses to send an unmasked update "
                "(set federation.secagg.enabled=true on the server)"
            )
        reply = call_next(msg, context)
        if not reply.has_error():
            event("update sent UNMASKED: secure aggregation is off for this run")
        return reply

    def update_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not _is_train(msg):
            return call_next(msg, context)
        import numpy as np

        from privdiff.common.updates import clip_update

        fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        fit = protocol.FitConfig.from_record(dict(fit_ins.config))
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        fit_res = compat.recorddict_to_fitres(reply.content, keep_input=False)
        global_vector = npy_view(fit_ins.parameters.tensors[0])
        update = np.subtract(npy_view(fit_res.parameters.tensors[0]), global_vector, dtype=np.float32)
        # plain FedAvg quantizes nothing, so nothing needs clipping there
        clipped = clip_update(update, fit.clipping_range if fit.clipping_range > 0 else float("inf"))
        if fit.secagg_vector == PRIVDIFF_VECTOR:  # handed to the SecAgg+ mod in memory, never serialized
            stash_update(msg.metadata.message_id, clipped.vector)
            fit_res.parameters = Parameters(tensors=[], tensor_type=NUMPY_STYPE)
        else:
            fit_res.parameters = to_parameters([clipped.vector])
        fit_res.num_examples = registered_weight(fit_ins.config, fit_res.num_examples)
        fit_res.metrics[protocol.METRIC_CLIPPED] = clipped.clipped_values
        fit_res.metrics[protocol.METRIC_RANGE_EXP] = clipped.range_exponent
        return Message(compat.fitres_to_recorddict(fit_res, keep_input=False), reply_to=msg)

    def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if _is_train(msg) and KEY_CLIPPING_NORM in msg.content.config_records["fitins.config"]:
            return fixedclipping_mod(msg, context, call_next)
        return call_next(msg, context)

    app = ClientApp(mods=[*extra_mods, secure_aggregation_mod, update_mod, dp_clipping_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from privdiff.common.task import resolve_device
        from privdiff.common.updates import StateLayout, flatten_state, unflatten_state

        started = time.monotonic()
        task = the_task()
        site = sites.site(context)
        fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        fit = protocol.FitConfig.from_record(dict(fit_ins.config))
        cfg = _config(fit.config_yaml)
        models = _models(task, fit.config_yaml)
        arrays = [npy_view(t) for t in fit_ins.parameters.tensors]
        frozen = _frozen_layout(task, models, fit.stage)
        offset = 0
        for stage, layout in frozen:  # the federation's result of earlier stages (e.g. the VAE)
            task.load_stage_state(
                models, stage, unflatten_state(arrays[1][offset : offset + layout.size], layout)
            )
            offset += layout.size
        layout = StateLayout.of(task.stage_state(models, fit.stage))
        if layout.fingerprint != fit.layout:
            raise FederationError(
                f"stage {fit.stage}: this site's model does not match the server's "
                f"(layout {layout.fingerprint} vs {fit.layout}): different privdiff versions?"
            )
        task.load_stage_state(models, fit.stage, unflatten_state(arrays[0], layout))
        data = _site_data(task, site, fit.config_yaml)
        seed = int.from_bytes(
            hashlib.sha256(f"{fit.seed}:{fit.round}:{site.seed_id}".encode()).digest()[:4], "little"
        )
        optimizer_store = OptimizerStore(site.cache_dir / "optimizer", context.run_id)
        optimizer_state = optimizer_store.earlier(fit.stage, fit.round)
        pacer = site.pacer(f"{fit.stage}-{fit.round}")
        result = task.local_train(
            models,
            fit.stage,
            data,
            cfg,
            fit.local_steps,
            seed=seed,
            device=resolve_device(cfg.device),
            optimizer_state=optimizer_state,
            schedule_span=_schedule_span(cfg, fit),
            on_progress=pacer.progress if pacer else None,
        )
        if optimizer_state:
            optimizer_store.keep(fit.stage, fit.round, optimizer_state)
        local = flatten_state(task.stage_state(models, fit.stage), layout)
        metrics = {
            protocol.METRIC_LOSS: float(result["loss"]),
            protocol.METRIC_EXAMPLES: int(result.get("examples", task.num_examples(data))),
        }
        fit_res = FitRes(
            status=Status(code=Code.OK, message="ok"),
            # the frozen states go back untouched (their bytes, not a copy): DP clipping compares them
            parameters=Parameters(
                tensors=[npy_bytes(local), *fit_ins.parameters.tensors[1:]], tensor_type=NUMPY_STYPE
            ),
            num_examples=task.num_examples(data),
            metrics=metrics,
        )
        event(
            f"round {fit.round} ({fit.stage}) trained on {metrics[protocol.METRIC_EXAMPLES]} films, "
            f"{fit.local_steps} steps, in {time.monotonic() - started:.1f} s"
            + (f" ({pacer.waited_s:.1f} s of it paced: other sites' turn)" if pacer else "")
        )
        return Message(compat.fitres_to_recorddict(fit_res, keep_input=False), reply_to=msg)

    @app.query("describe")
    def describe(msg: Message, context: Context) -> Message:
        from privdiff.common.updates import StateLayout

        task = the_task()
        site = sites.site(context)
        config_yaml = str(msg.content.config_records[protocol.CONFIG_RECORD]["config-yaml"])
        models = _models(task, config_yaml)
        data = _site_data(task, site, config_yaml)
        layouts = [StateLayout.of(task.stage_state(models, s)).fingerprint for s in task.stages]
        record = ConfigRecord(
            {
                "examples": int(task.num_examples(data)),
                "layouts": layouts,
                "can-install": site.public_key is not None,
            }
        )
        return Message(RecordDict({protocol.CONFIG_RECORD: record}), reply_to=msg)

    @app.query("validate")
    def validate(msg: Message, context: Context) -> Message:
        from privdiff.client.validation import score_candidate

        scores = score_candidate(the_task(), sites.site(context), msg.content)
        return Message(RecordDict({protocol.CONFIG_RECORD: ConfigRecord(scores.to_record())}), reply_to=msg)

    @app.query("install_anonymizer")
    def install(msg: Message, context: Context) -> Message:
        site = sites.site(context)
        version = str(msg.content.config_records[protocol.CONFIG_RECORD]["version"])
        if site.public_key is None:
            result = {
                "installed": False,
                "version": version,
                "key_id": "",
                "error": "this site has no federation public key configured (--public-key)",
            }
        else:
            files = {name: array.numpy() for name, array in msg.content.array_records["anonymizer"].items()}
            from privdiff.common.distribution import install_anonymizer

            result = install_anonymizer(files, version, site.model_store, site.public_key).to_record()
        if result["installed"]:
            event(f"anonymizer {version} installed in {site.model_store} (key id {result['key_id']})")
        else:
            event(f"anonymizer {version} REFUSED, the previous model stays: {result['error']}")
        result["pid"] = os.getpid()
        return Message(RecordDict({protocol.CONFIG_RECORD: ConfigRecord(result)}), reply_to=msg)

    return app


# What `flwr run` / the SuperNode loads ([tool.flwr.app.components] clientapp).
app = make_client_app()
