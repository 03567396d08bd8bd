"""The attackers and judges trained on *real* images, one set per independent run, cached on disk.

Run r fixes its own validation/test pairs and its own network seeds; the paper's mean ± std is
over such runs. Every method is scored by the same judges, and `privdiff ablate` trains them
once and reuses them across methods (the cache key is the data's content hash, the settings
and the seeds, so a changed setting retrains rather than reusing a stale network).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from privdiff_core.nets import ImageClassifier, SiameseVerifier
from privdiff_core.verification import make_pairs

from .attackers import (
    AttackerSettings,
    build_demographics,
    build_diagnosis,
    build_verifier,
    train_demographics,
    train_diagnosis,
    train_verifier_attacker,
)
from .linkage import hard_negative_pairs
from .protocol import EvalSplits, derive_seed

JUDGE_NAMES = ("verifier", "diagnosis", "demographics")


@dataclass(frozen=True)
class RunPlan:
    """One independent run: its seed and its fixed validation and test pairs (rows i, j, same);
    `hard_test_pairs`: the test positives with negatives matched on sex, age group and site."""

    run: int
    seed: int
    val_pairs: np.ndarray
    test_pairs: np.ndarray
    hard_test_pairs: np.ndarray


def plan_runs(
    splits: EvalSplits, runs: int, base_seed: int, val_pairs: int, test_pairs: int
) -> list[RunPlan]:
    if runs < 1:
        raise ValueError("evaluate.runs must be at least 1")
    plans = []
    for r in range(runs):
        seed = derive_seed(base_seed, "run", r)
        test = make_pairs(splits.test.patient_ids, test_pairs, np.random.default_rng([seed, 2]))
        plans.append(
            RunPlan(
                run=r,
                seed=seed,
                val_pairs=make_pairs(splits.val.patient_ids, val_pairs, np.random.default_rng([seed, 1])),
                test_pairs=test,
                hard_test_pairs=hard_negative_pairs(splits.test, test, np.random.default_rng([seed, 3])),
            )
        )
    return plans


@dataclass
class Judges:
    """Real-trained verifier, diagnosis classifier and age/sex classifier of one run."""

    run: int
    verifier: SiameseVerifier
    diagnosis: ImageClassifier
    demographics: ImageClassifier
    logs: dict


def train_judges(
    splits: EvalSplits,
    plan: RunPlan,
    verifier: AttackerSettings,
    classifier: AttackerSettings,
    device: str = "cpu",
    progress: bool = True,
) -> Judges:
    """Train the three judges on the real training images, selecting checkpoints on validation."""
    train, val = splits.train, splits.val
    v_settings = AttackerSettings(**{**asdict(verifier), "seed": derive_seed(plan.seed, "verifier")})
    c_settings = AttackerSettings(**{**asdict(classifier), "seed": derive_seed(plan.seed, "diagnosis")})
    d_settings = AttackerSettings(**{**asdict(classifier), "seed": derive_seed(plan.seed, "demographics")})
    ver, ver_log = train_verifier_attacker(
        train.images,
        train.images,
        train.patient_ids,
        v_settings,
        val=(val.images, val.images, plan.val_pairs),
        device=device,
        desc=f"run {plan.run}: verifier (real)",
        progress=progress,
    )
    diag, diag_log = train_diagnosis(
        train.images,
        train.labels,
        train.label_mask,
        c_settings,
        val=(val.images, val.labels, val.label_mask),
        device=device,
        desc=f"run {plan.run}: diagnosis (real)",
        progress=progress,
    )
    demo, demo_log = train_demographics(
        train.images,
        train.age_group,
        train.sex,
        d_settings,
        val=(val.images, val.age_group, val.sex),
        device=device,
        desc=f"run {plan.run}: age+sex (real)",
        progress=progress,
    )
    logs = {
        "verifier": ver_log.as_dict(),
        "diagnosis": diag_log.as_dict(),
        "demographics": demo_log.as_dict(),
    }
    return Judges(plan.run, ver, diag, demo, logs)


def _cache_key(
    splits: EvalSplits, plan: RunPlan, verifier: AttackerSettings, classifier: AttackerSettings
) -> str:
    material = json.dumps(
        {
            "data": splits.fingerprint(),
            "seed": plan.seed,
            "val_pairs": hashlib.sha256(plan.val_pairs.tobytes()).hexdigest(),
            "verifier": asdict(verifier),
            "classifier": asdict(classifier),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def load_or_train_judges(
    splits: EvalSplits,
    plan: RunPlan,
    verifier: AttackerSettings,
    classifier: AttackerSettings,
    cache_dir: Path | None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Judges, bool]:
    """Judges of one run from `cache_dir/run_<r>/` when the key matches; else train and store them.

    Returns (judges, loaded_from_cache).
    """
    from safetensors.torch import load_file, save_file

    key = _cache_key(splits, plan, verifier, classifier)
    folder = cache_dir / f"run_{plan.run}" if cache_dir is not None else None
    meta_file = folder / "judges.json" if folder is not None else None
    if meta_file is not None and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("key") == key:
            nets = {
                "verifier": build_verifier(verifier),
                "diagnosis": build_diagnosis(classifier),
                "demographics": build_demographics(classifier),
            }
            for name, net in nets.items():
                net.load_state_dict(load_file(folder / f"{name}.safetensors"))
                net.eval()
            return Judges(
                plan.run, nets["verifier"], nets["diagnosis"], nets["demographics"], meta["logs"]
            ), True
    judges = train_judges(splits, plan, verifier, classifier, device, progress)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in JUDGE_NAMES:
            tmp = folder / f".{name}.safetensors.tmp{os.getpid()}"
            save_file(state_for_torch(getattr(judges, name)), tmp)
            tmp.replace(folder / f"{name}.safetensors")
        # The key is written last: a half-written cache never matches.
        tmp = folder / f".judges.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"key": key, "logs": judges.logs}, indent=2))
        tmp.replace(meta_file)
    return judges, False


def state_for_torch(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU state dict (safetensors refuses views)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
