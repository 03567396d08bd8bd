"""Central training run of `privdiff train`: both stages, checkpointed, resumable.

    RUN/
      config.yaml                 the resolved config (written first; a resume checks it)
      checkpoints/last.pt         models + optimizer + stage + step, replaced atomically
      metrics.json                losses per stage (train and val), wall time
      anonymizer/                 the final anonymizer folder (model.folder)

A run that stops (Ctrl-C, a crash, or `stop_after`) continues from its last checkpoint when
started again with the same config; because every step's randomness depends only on (seed,
stage, step), the resumed run ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from privdiff_core.config import save_config
from privdiff_core.model.privdiff_net import resolve_device
from privdiff_core.training import build_models, save_anonymizer
from privdiff_core.training.stages import (
    STAGES,
    StageTrainer,
    TrainingError,
    evaluate_stage,
    load_stage_state,
    resolve_steps,
    stage_state,
)

CHECKPOINT_FORMAT = "privdiff-train-checkpoint/1"
# Sections that define the model: a run may only resume under the same values.
MODEL_SECTIONS = ("image_size", "vae", "encoder", "unet", "conditioning", "sas", "spg", "diffusion", "seed")


@dataclass
class RunResult:
    """What `train_run` did: finished or stopped, where the anonymizer is, metrics per stage."""

    finished: bool
    steps_done: int
    anonymizer: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)


def _model_part(cfg: DictConfig) -> dict[str, Any]:
    full = OmegaConf.to_container(cfg, resolve=True)
    return {k: full.get(k) for k in MODEL_SECTIONS}


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _check_resume_config(run_dir: Path, cfg: DictConfig) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = OmegaConf.load(saved_path)
    if _model_part(saved) != _model_part(cfg):
        raise TrainingError(
            f"{run_dir} holds a checkpoint of a run with a different model config "
            f"(sections {', '.join(MODEL_SECTIONS)}); use a new out= folder or the same overrides"
        )


def _val_loss(models, stage: str, val_data, cfg: DictConfig, seed: int, device) -> float:
    """The stage's loss on the same `train.val_batches` batches of the val split every time."""
    return evaluate_stage(models, stage, val_data, cfg, cfg.train.val_batches, seed=seed, device=device)


def load_training_data(cfg: DictConfig, data_dir: Path, progress: bool = True):
    """CXRTensors of the train split and of the val split (None when the data set has none), from
    one pass over the data's headers. No train images: the DatasetError naming each split's count."""
    from privdiff_core.data import open_dataset

    dataset = open_dataset(data_dir, cfg.image_size, progress=progress)
    train = dataset.split("train").load_tensors(progress=progress)
    if dataset.split_counts()["val"] == 0:
        return train, None
    return train, dataset.split("val").load_tensors(progress=progress)


def reuse_autoencoder(models: Any, source: Path) -> Path:
    """Copy the autoencoder stage (VAE, attribute encoder, latent statistics) of a trained
    anonymizer or run folder into `models`, e.g. to train ablation variants on one first stage."""
    from privdiff_core.anonymizer import find_model_folder
    from privdiff_core.model.folder import load_models

    folder = find_model_folder(source)
    trained, _, _ = load_models(folder)
    load_stage_state(models, "autoencoder", stage_state(trained, "autoencoder"))
    return folder


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read without unpickling code: tensors, numbers, strings and
    containers only (`weights_only=True`). A file that needs more was not written by privdiff
    (or was tampered with) and is refused, since unpickling it could run any code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise TrainingError(
            f"{path}: refusing a checkpoint that holds more than tensors and plain values (loading it "
            "could run code); delete it, or the run folder, to start over"
        ) from err
    except (OSError, RuntimeError, EOFError) as err:
        raise TrainingError(f"{path}: unreadable checkpoint ({err}); delete it to start over") from err


def train_run(
    cfg: DictConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    train_data: Any = None,
    val_data: Any = None,
) -> RunResult:
    """Train the autoencoder stage, then the denoiser stage; resume from RUN/checkpoints/last.pt.

    With `train.autoencoder.reuse` set (an anonymizer or run folder of the same model config), the
    autoencoder stage is copied from there instead of trained.

    stop_after: stop (checkpointed) after that many steps in this call, as an interruption would.
    train_data / val_data: CXRTensors to use instead of reading `data_dir` (tests, benchmarks).
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    device = resolve_device(cfg.device)
    resuming = ckpt_path.is_file()
    if resuming:
        _check_resume_config(run_dir, cfg)
    save_config(cfg, run_dir / "config.yaml")
    if train_data is None:
        train_data, val_data = load_training_data(cfg, Path(data_dir), progress)
    models = build_models(cfg)
    seed = cfg.seed
    state: dict[str, Any] = {"stage_index": 0, "step": 0, "trainer": None, "metrics": {}, "seconds": 0.0}
    if resuming:
        checkpoint = _load_checkpoint(ckpt_path)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{ckpt_path}: not a privdiff training checkpoint")
        models.load_state_dict(checkpoint["models"])
        state = checkpoint
    reuse = cfg.train.autoencoder.get("reuse")
    if reuse and not resuming:
        state["stage_index"] = 1
        state["metrics"]["autoencoder"] = {"reused": str(reuse_autoencoder(models, Path(reuse)))}
    every = max(1, cfg.train.checkpoint_every)
    started, done_now = time.perf_counter(), 0

    def checkpoint(stage_index: int, trainer: StageTrainer | None) -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "stage_index": stage_index,
                "trainer": None if trainer is None else trainer.state_dict(),
                "models": models.state_dict(),
                "metrics": state["metrics"],
                "seconds": state["seconds"] + time.perf_counter() - started,
            },
        )

    for stage_index in range(state["stage_index"], len(STAGES)):
        stage = STAGES[stage_index]
        steps = resolve_steps(cfg, stage, len(train_data.images))
        trainer = StageTrainer(models, stage, train_data, cfg, seed=seed, device=device)
        if stage_index == state["stage_index"] and state.get("trainer"):
            trainer.load_state_dict(state["trainer"])
        summary = state["metrics"].setdefault(stage, {})
        losses = summary.setdefault("loss_history", [])
        parts_history = summary.setdefault("parts_history", [])
        val_history = summary.setdefault("val_history", [])  # [step, val loss]: is it still falling?
        val_every = cfg.train.val_every if val_data is not None else 0
        val_every = val_every if cfg.train.val_batches > 0 else 0
        bar = tqdm(total=steps, initial=trainer.step_index, desc=stage, disable=not progress)
        while trainer.step_index < steps:
            if stop_after is not None and done_now >= stop_after:
                checkpoint(stage_index, trainer)
                bar.close()
                return RunResult(False, done_now, None, state["metrics"])
            try:
                parts = trainer.step(trainer.step_index / steps)
            except KeyboardInterrupt:
                checkpoint(stage_index, trainer)  # the step in flight is lost, nothing else
                raise
            done_now += 1
            losses.append(parts["loss"])
            parts_history.append(parts)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
            if val_every and trainer.step_index % val_every == 0:
                val_history.append(
                    [trainer.step_index, _val_loss(models, stage, val_data, cfg, seed, device)]
                )
            if trainer.step_index % every == 0:
                checkpoint(stage_index, trainer)
        bar.close()
        summary.update(trainer.finish())
        summary["steps"] = steps
        window = parts_history[-max(1, len(parts_history) // 4) :]
        for key in sorted({k for p in window for k in p}):  # loss parts over the last quarter
            values = [p[key] for p in window if key in p]
            summary[f"{key}_last"] = float(sum(values) / len(values))
        if val_data is not None and cfg.train.val_batches > 0:
            summary["val_loss"] = _val_loss(models, stage, val_data, cfg, seed, device)
        checkpoint(stage_index + 1, None)
        state["trainer"] = None
    seconds = state["seconds"] + time.perf_counter() - started
    metrics = {"seconds": seconds, "examples": len(train_data.images), "stages": state["metrics"]}
    folder = save_anonymizer(
        models.cpu(),
        cfg,
        run_dir / "anonymizer",
        metadata={"trained_by": "privdiff train", "data": str(data_dir), "train_seconds": round(seconds, 1)},
    )
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(run_dir / "metrics.json")
    return RunResult(True, done_now, folder, metrics)
