"""Checks of the federation tests: run a plan with a snapshot per round, read what the sites
recorded (recording_task.RecordingTask), and compare a round's SecAgg+ aggregate with plain
FedAvg of the sites' real updates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from recording_task import RecordingTask, tiny_config

from privdiff.common.updates import StateLayout, flatten_state, quantization_step
from privdiff.server.checkpoint import CHECKPOINT_FILE
from privdiff.server.settings import federation_settings
from privdiff.server.workflow import QUANTIZATION_RANGE
from privdiff.simulation.engine import run_federation


def run_plan(
    cfg,
    fed,
    out: Path,
    *,
    mods=(),
    lines: list[str] | None = None,
    sites: int | None = None,
    task: RecordingTask | None = None,
) -> list[Path]:
    """Run the plan (on the first `sites` sites of `fed`, default all); snapshot the checkpoint
    after every round. Returns the snapshots."""
    snapshots: list[Path] = []
    lines = [] if lines is None else lines

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("["):  # a round finished and was checkpointed
            snapshots.append(out / f"round-{len(snapshots) + 1}.pt")
            shutil.copy(out / CHECKPOINT_FILE, snapshots[-1])

    run_federation(
        cfg,
        federation_settings(cfg),
        task or RecordingTask(),
        out,
        fed.site_dirs[:sites],
        fed.homes[:sites],
        fed.signing_key,
        extra_client_mods=mods,
        progress=progress,
    )
    return snapshots


def site_records(folder: Path, stage: str, base: np.ndarray | None = None) -> list[dict]:
    """What the sites recorded in `stage`; with `base`, only the round that started from it."""
    records = [torch.load(p, weights_only=True) for p in sorted(folder.glob(f"{stage}-*.pt"))]
    if base is not None:
        records = [r for r in records if np.array_equal(as_vector(r["before"]), base)]
    return records


MODEL_CONFIG = tiny_config(Path("unused"))  # the model part of every run here: tiny PrivDiff-Net


def float32_rounding(values: np.ndarray) -> float:
    """The server stores global + update as float32: up to one float32 spacing off, twice."""
    return 2 * float(np.spacing(np.float32(np.abs(values).max())))


def as_vector(state: dict[str, torch.Tensor]) -> np.ndarray:
    return flatten_state(state, StateLayout.of(state)).astype(np.float64)


def stage_vector(checkpoint: Path, stage: str) -> np.ndarray:
    task, saved = RecordingTask(), torch.load(checkpoint, weights_only=True)
    models = task.build_models(MODEL_CONFIG)
    models.load_state_dict(saved["models"])
    return as_vector(task.stage_state(models, stage))


def fedavg_of(records: list[dict], clipping_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain FedAvg of the updates the sites sent (clipped as they clip them), and the base."""
    bases = [as_vector(r["before"]) for r in records]
    for base in bases[1:]:
        np.testing.assert_array_equal(base, bases[0])  # every site started from the same global
    updates = [
        (as_vector(r["after"]) - base).astype(np.float32) for r, base in zip(records, bases, strict=True)
    ]
    if clipping_range > 0:
        updates = [np.clip(u, -clipping_range, clipping_range) for u in updates]
    weights = np.array([r["examples"] for r in records], dtype=np.float64)
    mean = sum(w * u.astype(np.float64) for w, u in zip(weights, updates, strict=True)) / weights.sum()
    return mean, bases[0]


def check_secagg_round(run: dict, round_: int, stage: str, sites: int, without: tuple[str, ...] = ()) -> None:
    """The server's aggregate of `round_` equals FedAvg of the sites' updates (leaving out the
    sites named in `without`), up to SecAgg+'s quantization: each weighted value is rounded to a
    grid of 2*range/2**22, so the mean of `sites` updates is off by at most
    sites * step / (sum of weights / max weight). `run`: root (records/ below it), snapshots,
    history."""
    snapshots, history = run["snapshots"], run["history"]
    if round_ == 1:  # the server's initial model: the same seed builds the same network
        task = RecordingTask()
        start = as_vector(task.stage_state(task.build_models(MODEL_CONFIG), stage))
    else:
        start = stage_vector(snapshots[round_ - 2], stage)
    records = [r for r in site_records(run["root"] / "records", stage, start) if r["site"] not in without]
    by_site: dict[str, dict] = {}
    for record in records:  # a rerun round (range widened) trains again from the same base
        if record["site"] in by_site:
            np.testing.assert_array_equal(
                as_vector(record["after"]), as_vector(by_site[record["site"]]["after"])
            )
        by_site[record["site"]] = record
    records = list(by_site.values())
    assert len(records) == sites
    clip = history[round_ - 1]["clipping_range"]
    expected, base = fedavg_of(records, clip)
    aggregate = stage_vector(snapshots[round_ - 1], stage) - base
    step = quantization_step(clip, QUANTIZATION_RANGE)
    max_weight = max(r["examples"] for r in site_records(run["root"] / "records", "autoencoder"))
    weight_sum = sum(r["examples"] for r in records) / max_weight
    tolerance = sites * step / weight_sum + float32_rounding(base)
    np.testing.assert_allclose(aggregate, expected, rtol=0, atol=tolerance)
    assert np.abs(expected).max() > 100 * tolerance  # the comparison is not between two near-zeros
