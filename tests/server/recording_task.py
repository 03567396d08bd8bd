"""Helpers of the federation tests: the tiny PrivDiff-Net that records what each site did, a
site that drops out mid-round, and a synthetic federation with the federation's keys.

`RecordingTask` is `PrivdiffTask` (Contract 4: privdiff_core.training) plus one side effect: every
local training writes the stage state it started from, the one it ended with and the frozen
earlier stages to `cfg.test_record_dir`, so a test can recompute plain FedAvg of the sites' real
updates and compare it with what the server aggregated under SecAgg+.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from privdiff.common.task import PrivdiffTask
from privdiff_core.config import load_config
from privdiff_core.signing import generate_signing_key

STAGES = ("autoencoder", "denoiser")


class RecordingTask(PrivdiffTask):
    def load_site_data(self, site_dir: Path, cfg: DictConfig, cache_dir: Path | None) -> Any:
        data = super().load_site_data(site_dir, cfg, cache_dir)
        data.site_name = Path(site_dir).name  # which site trained, for the records
        return data

    def local_train(self, models, stage, data, cfg, steps, seed, device, **options) -> dict[str, float]:
        before = self.stage_state(models, stage)
        frozen = {k: v for s in STAGES[: STAGES.index(stage)] for k, v in self.stage_state(models, s).items()}
        result = super().local_train(models, stage, data, cfg, steps, seed, device, **options)
        folder = Path(cfg.test_record_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "stage": stage,
            "seed": seed,
            "examples": int(result["examples"]),
            "site": data.site_name,
            "before": before,
            "after": self.stage_state(models, stage),
            "frozen": frozen,
            "schedule_span": list(options.get("schedule_span", (0.0, 1.0))),
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),  # of the Ray actor that trained
            "paced": options.get("on_progress") is not None,
        }
        torch.save(record, folder / f"{stage}-{data.site_name}-{seed}.pt")
        return result


class InputReturningTask(RecordingTask):
    """An anonymizer broken the worst way for privacy (the validation gate's test): every output
    is its input. Here, not in the test module: Ray's workers must import it."""

    def anonymize(self, models, cfg, images, seed):  # noqa: ANN001, ANN201
        return images.clone()


def tiny_config(record_dir: Path, **federation: Any) -> DictConfig:
    """configs/tiny.yaml with 3 sites, 2 local steps, no round retries, and `federation` merged in."""
    cfg = load_config(
        "tiny",
        [
            "device=cpu",
            "federation.sites=3",
            "federation.min_sites=3",
            "federation.round_retries=0",
            "federation.local_steps.autoencoder=2",
            "federation.local_steps.denoiser=2",
            # the sites' own judges, trained at the validation gate: brief, as everything here
            "evaluate.verifier.steps=40",
            "evaluate.classifier.steps=30",
        ],
    )
    return OmegaConf.merge(cfg, {"federation": federation, "test_record_dir": str(record_dir)})


class DropOutMod:
    """A Flower mod that makes one virtual site fail in one round, after SecAgg+ key sharing:
    the site has handed out its key shares but never uploads its masked update."""

    def __init__(self, partition: int, round_: int) -> None:
        self.partition, self.round = partition, round_

    def __call__(self, msg, context, call_next):
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

        content = msg.content
        if (
            int(context.node_config["partition-id"]) == self.partition
            and RECORD_KEY_CONFIGS in content.config_records
            and content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS
            and int(content.config_records["fitins.config"]["round"]) == self.round
        ):
            raise RuntimeError(f"site {self.partition} lost its connection in round {self.round}")
        return call_next(msg, context)


@dataclass
class Federation:
    root: Path
    site_dirs: list[Path]
    homes: list[Path]
    signing_key: Path
    public_key: Path


def make_federation(root: Path, sites: int) -> Federation:
    """A synthetic federation (privdiff_core.synth, 32 px), one home per site holding its copy of
    the federation's public key, and the signing key pair."""
    from privdiff_core.synth import SynthParams, generate_federation

    root.mkdir(parents=True, exist_ok=True)
    generate_federation(
        root / "data", SynthParams(sites=sites, patients=6, images_per_patient=2, size=32), progress=False
    )
    generate_signing_key(root / "model-signing.pem", root / "model-signing.pub")
    site_dirs = sorted(p for p in (root / "data").iterdir() if p.is_dir())
    homes = []
    for site in site_dirs:
        homes.append(root / "homes" / site.name)
        homes[-1].mkdir(parents=True)
        shutil.copy(root / "model-signing.pub", homes[-1] / "federation-public.pem")
    return Federation(root, site_dirs, homes, root / "model-signing.pem", root / "model-signing.pub")
