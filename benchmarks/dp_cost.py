"""What differential privacy costs: epsilon and validation loss at a few noise levels.

Runs the real federated plan (SecAgg+, privdiff's vector path) in Flower's simulation engine on
a synthetic federation, once without DP and once per noise multiplier, and reads back what the
signed model says: the privacy spent (Flower's RDP accountant, delta 1e-5) and the validation
gate's per-stage val loss at the sites (candidate vs the seeded initial model). A short plan, so
the numbers compare the settings with each other, not with a fully trained anonymizer.

    python benchmarks/dp_cost.py --config demo --noise none,0.5,1.0 --out benchmarks/results/dp_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from privdiff.common.task import PrivdiffTask
from privdiff.server.settings import federation_settings
from privdiff_core.config import load_config
from privdiff_core.signing import generate_signing_key, load_public_key, verify_model

SITES = 3


def run_once(config: str, noise: float | None, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from privdiff.simulation.engine import run_federation
    from privdiff_core.synth import SynthParams, generate_federation

    overrides = [
        "device=cpu",
        f"federation.sites={SITES}",
        f"federation.min_sites={SITES}",
        f"federation.rounds.autoencoder={args.rounds}",
        f"federation.rounds.denoiser={args.rounds}",
        f"federation.local_steps.autoencoder={args.steps}",
        f"federation.local_steps.denoiser={args.steps}",
        "federation.validation.max_loss_ratio=1000",  # measure, do not stop: the verdict is read back
    ]
    if noise is not None:
        overrides += [
            "federation.dp.enabled=true",
            f"federation.dp.noise_multiplier={noise}",
            f"federation.dp.clipping_norm={args.clipping_norm}",
        ]
    cfg = load_config(config, overrides)
    data = work / f"data-{config}"
    if not data.is_dir():
        generate_federation(
            data,
            SynthParams(sites=SITES, patients=args.patients, images_per_patient=2, size=cfg.image_size),
            progress=False,
        )
    sites = sorted(p for p in data.iterdir() if p.is_dir())
    out = work / f"{config}-{'plain' if noise is None else f'dp{noise:g}'}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generate_signing_key(out / "sign.pem", out / "sign.pub")
    homes = [out / "homes" / s.name for s in sites]
    for home in homes:
        home.mkdir(parents=True)
    started = time.perf_counter()
    run_federation(
        cfg,
        federation_settings(cfg),
        PrivdiffTask(),
        out,
        sites,
        homes,
        out / "sign.pem",
        progress=lambda line: print(f"    {line}", flush=True),
    )
    metadata = verify_model(out / "anonymizer", load_public_key(out / "sign.pub"))["metadata"]
    return {
        "config": config,
        "noise_multiplier": noise,
        "clipping_norm": args.clipping_norm if noise is not None else None,
        "epsilon": metadata.get("privacy", {}).get("epsilon"),
        "delta": metadata.get("privacy", {}).get("delta"),
        "val_loss": {s: v["candidate_loss"] for s, v in metadata["validation"]["stages"].items()},
        "initial_val_loss": {s: v["accepted_loss"] for s, v in metadata["validation"]["stages"].items()},
        "run_s": time.perf_counter() - started,
        "loadavg_after": os.getloadavg(),  # a shared machine: how busy it was
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="demo", help="privdiff config (tiny, demo)")
    parser.add_argument(
        "--noise", default="none,0.5,1.0", help="comma-separated noise multipliers; none = a run without DP"
    )
    parser.add_argument("--clipping-norm", type=float, default=0.1, help="L2 clipping norm of every update")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per stage")
    parser.add_argument("--steps", type=int, default=10, help="local steps per round")
    parser.add_argument("--patients", type=int, default=20, help="synthetic patients per site")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="dp-cost-"))
    results = []
    try:
        for noise in [None if n == "none" else float(n) for n in args.noise.split(",")]:
            print(f"== {args.config}, noise {noise}", flush=True)
            results.append(run_once(args.config, noise, args, work))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(f".{args.out.name}.tmp")
            tmp.write_text(
                json.dumps({"settings": vars(args) | {"out": str(args.out)}, "results": results}, indent=2)
            )
            tmp.replace(args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        print(r)


if __name__ == "__main__":
    main()
