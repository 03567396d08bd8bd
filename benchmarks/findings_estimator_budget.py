"""How well the anonymizer's findings network learns in the denoiser stage's federated steps, by its
widths and batch size.

The generative mode draws the findings this network estimates (`encoder.findings_network`), so its
test AUC bounds the diagnosis the anonymized films keep. In the federation it learns beside the
denoiser: R rounds x S local steps on each site, Adam's state kept on the site between rounds, the
sites' weights averaged by their number of films (FedAvg). This script repeats exactly that for the
findings network alone, on the sites of a federation folder, with the training stage's loss
(`findings_loss`, rare findings up-weighted per site), jitter and learning rate, and reports the
mean test AUC over the findings (all sites' test films), the same with the logits averaged over
the film and four 2-pixel shifts of it, and the seconds per local step (one torch thread; the cost
the main job pays per site and step). The findings network learns at the denoiser stage's
learning-rate schedule (train.denoiser.lr_schedule / lr_final, as in the training stage);
--input-size area-averages the films to fewer pixels first; `encoder.findings_pool_grid=G` pools
the network's last features over a G x G grid instead of the whole film.

    OMP_NUM_THREADS=1 python benchmarks/findings_estimator_budget.py --data runs/demo/federation \\
        --setting 32,64,64,64:32 --setting 16,32,64,64:64 --setting 16,32,64,64:96 --seeds 3 \\
        --json benchmarks/results/findings_estimator_budget.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from measure import load_average, write_report

from privdiff_core.attributes import NUM_FINDINGS
from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.data.dataset import CXRTensors
from privdiff_core.evaluation.attackers import diagnosis_report, per_finding_auc, predict
from privdiff_core.model.attribute_encoder import findings_loss
from privdiff_core.nets import ImageClassifier, finding_pos_weight, jitter
from privdiff_core.training.stages import lr_factor


def federated_fit(
    sites: list[CXRTensors],
    test: CXRTensors,
    widths: list[int],
    batch: int,
    rounds: int,
    local_steps: int,
    lr: float,
    embed_dim: int,
    seed: int,
    lr_schedule: Callable[[float], float] = lambda progress: 1.0,
    input_size: int | None = None,
    pool_grid: int = 1,
) -> dict:
    """Train one findings network as the federation does; its test AUC after every round.
    `lr_schedule`: the lr's factor at each progress (0..1) through all rounds' steps; `pool_grid`:
    the network's pooling grid (encoder.findings_pool_grid)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    global_model = ImageClassifier(NUM_FINDINGS, "small", embed_dim, tuple(widths), pool_grid)
    optimizer_states: list[dict | None] = [None] * len(sites)
    pos_weights = [finding_pos_weight(site.labels, site.label_mask) for site in sites]
    sizes = np.array([len(site.images) for site in sites], dtype=np.float64)
    curve, step_seconds = [], []
    for round_index in range(rounds):
        updates = []
        for k, site in enumerate(sites):
            model = copy.deepcopy(global_model).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            if optimizer_states[k] is not None:
                optimizer.load_state_dict(optimizer_states[k])
            started = time.perf_counter()
            for step in range(local_steps):
                progress = (round_index * local_steps + step) / (rounds * local_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr * lr_schedule(progress)
                index = torch.randint(0, len(site.images), (batch,), generator=generator)
                logits = model(_resized(jitter(site.images[index], rng), input_size))
                loss = findings_loss(logits, site.labels[index], site.label_mask[index], pos_weights[k])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            step_seconds.append((time.perf_counter() - started) / local_steps)
            optimizer_states[k] = optimizer.state_dict()
            updates.append(model.state_dict())
        weights = sizes / sizes.sum()
        global_model.load_state_dict(
            {
                name: sum(w * update[name].double() for w, update in zip(weights, updates, strict=True)).to(
                    updates[0][name].dtype
                )
                for name in updates[0]
            }
        )
        test_images = _resized(test.images, input_size)
        curve.append(diagnosis_report(global_model, test_images, test.labels, test.label_mask)["mean_auc"])
    return {
        "auc": curve[-1],
        "auc_shift_averaged": _shift_averaged_auc(global_model, test, input_size),
        "curve": curve,
        "seconds_per_step": float(np.median(step_seconds)),
    }


def _resized(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """The films area-averaged down to `size` pixels (None: as they are)."""
    if size is None or size == images.shape[-1]:
        return images
    return torch.nn.functional.adaptive_avg_pool2d(images, size)


def _shift_averaged_auc(
    model: torch.nn.Module, test: CXRTensors, input_size: int | None, shift: int = 2
) -> float:
    """Test AUC of the logits averaged over the film and its four shifts by `shift` pixels."""
    pad = torch.nn.functional.pad(test.images, (shift,) * 4, mode="replicate")
    size = test.images.shape[-1]
    offsets = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    with torch.no_grad():
        logits = torch.stack(
            [predict(model, _resized(pad[:, :, y : y + size, x : x + size], input_size)) for y, x in offsets]
        ).mean(0)
    probs = torch.sigmoid(logits).numpy()
    return float(per_finding_auc(test.labels.numpy(), test.label_mask.numpy(), probs)["mean_auc"])


def _setting(text: str) -> tuple[list[int], int]:
    widths, _, batch = text.partition(":")
    try:
        return [int(v) for v in widths.split(",")], int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHS:BATCH, e.g. 16,32,64,64:96") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a federation folder (site_XX folders)")
    parser.add_argument("--config", default="demo", help="rounds, local steps, lr, image size (default demo)")
    parser.add_argument(
        "--setting",
        type=_setting,
        action="append",
        required=True,
        help="WIDTHS:BATCH: the widths and the films per local step, e.g. 16,32,64,64:96 (repeatable)",
    )
    parser.add_argument(
        "--input-size", type=int, default=None, help="films area-averaged to this many pixels first"
    )
    parser.add_argument("--seeds", type=int, default=3, help="trainings per setting (seeds F..F+N-1)")
    parser.add_argument("--first-seed", type=int, default=0, help="F: the first seed (default 0)")
    parser.add_argument("--json", required=True, help="output JSON (rewritten after each training)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. federation.rounds.denoiser=16")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    rounds = int(cfg.federation.rounds.denoiser)
    # encoder.findings_steps: the findings network's Adam steps per denoiser step
    local_steps = int(cfg.federation.local_steps.denoiser) * int(cfg.encoder.findings_steps)
    root = Path(args.data)
    site_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not site_dirs:
        parser.error(f"{root} holds no site folders")
    size = int(cfg.image_size)
    sites = [open_dataset(d, size, "train", progress=False).load_tensors(progress=False) for d in site_dirs]
    test = open_dataset(root, size, "test", progress=False).load_tensors(progress=False)
    out = {
        "command": " ".join(["python", "benchmarks/findings_estimator_budget.py", *argv]),
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "local_steps": local_steps,
        "findings_steps": int(cfg.encoder.findings_steps),
        "lr": float(cfg.encoder.lr),
        "lr_schedule": str(cfg.train.denoiser.lr_schedule),
        "lr_final": float(cfg.train.denoiser.lr_final),
        "input_size": args.input_size,
        "pool_grid": int(cfg.encoder.findings_pool_grid),
        "sites": [len(s.images) for s in sites],
        "test_films": len(test.images),
        "settings": [],
    }
    lr, embed_dim = out["lr"], int(cfg.encoder.embed_dim)
    for widths, batch in args.setting:
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            load = load_average()
            run = federated_fit(
                sites,
                test,
                widths,
                batch,
                rounds,
                local_steps,
                lr,
                embed_dim,
                seed,
                lambda progress: lr_factor(cfg, "denoiser", progress),
                args.input_size,
                out["pool_grid"],
            )
            runs.append({"seed": seed, **run, "load_before": load, "load_after": load_average()})
            print(
                f"widths {widths} batch {batch} seed {seed}: AUC {run['auc']:.3f}, "
                f"shift-averaged {run['auc_shift_averaged']:.3f}",
                flush=True,
            )
        aucs = np.array([r["auc"] for r in runs])
        setting = {
            "widths": widths,
            "batch": batch,
            "auc_mean": float(aucs.mean()),
            "auc_std": float(aucs.std()),
            "seconds_per_step": float(np.median([r["seconds_per_step"] for r in runs])),
            "runs": runs,
        }
        out["settings"].append(setting)
        write_report(Path(args.json), out, _table(out))
    return 0


def _table(out: dict) -> str:
    lines = [
        f"Findings network, {out['rounds']} rounds x {out['local_steps']} local steps on "
        f"{len(out['sites'])} sites (FedAvg), test AUC over {out['test_films']} films, "
        f"pooling grid {out.get('pool_grid', 1)}.",
        "",
        "| widths | batch | test AUC (mean ± std) | runs | s per local step |",
        "|---|---|---|---|---|",
    ]
    for s in out["settings"]:
        lines.append(
            f"| {'-'.join(map(str, s['widths']))} | {s['batch']} | {s['auc_mean']:.3f} ± {s['auc_std']:.3f} "
            f"| {len(s['runs'])} | {s['seconds_per_step']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
