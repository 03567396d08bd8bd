"""What differential privacy costs: epsilon, re-identification and diagnosis at a few noise levels.

Runs the real federated plan (SecAgg+, privdiff's vector path) in Flower's simulation engine on
a synthetic federation, once without DP and once per noise multiplier, and reads back what the
signed model says: the privacy spent (Flower's RDP accountant, delta 1e-5), the validation
gate's per-stage val loss at the sites (candidate vs the seeded initial model), and the gate's
quick privacy/utility check: re-ID AUC of output vs input with each site's own verifier and the
diagnosis agreement of its findings classifier (server/validation.py). Every run uses the same
site judges (trained once, before the runs, then copied into each run's site folders), so the
runs differ only in the model. A short plan, so the numbers compare the settings with each
other, not with a fully trained anonymizer.

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


def prepare_sites(cfg: Any, config: str, args: argparse.Namespace, work: Path) -> tuple[list[Path], Path]:
    """The synthetic federation and each site's own judges (client/site_verifier.py), made once
    and shared by every run, so that the runs differ only in the model they train."""
    from privdiff.client.site_verifier import judge_settings, train_site_judges
    from privdiff_core.synth import SynthParams, generate_federation

    data, judges = work / f"data-{config}", work / f"judges-{config}"
    if not data.is_dir():
        params = SynthParams(sites=SITES, patients=args.patients, images_per_patient=2, size=cfg.image_size)
        generate_federation(data, params, progress=False)
    sites = sorted(p for p in data.iterdir() if p.is_dir())
    for site in sites:
        if not (judges / site.name).is_dir():
            started = time.perf_counter()
            train_site_judges(site, judges / site.name, int(cfg.image_size), *judge_settings(cfg))
            print(f"    {site.name}: judges trained in {time.perf_counter() - started:.0f} s", flush=True)
    return sites, judges


def run_once(config: str, noise: float | None, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from privdiff.simulation.engine import run_federation

    overrides = [
        "device=cpu",
        f"federation.sites={SITES}",
        f"federation.min_sites={SITES}",
        f"federation.rounds.autoencoder={args.rounds}",
        f"federation.rounds.denoiser={args.rounds}",
        f"federation.local_steps.autoencoder={args.steps}",
        f"federation.local_steps.denoiser={args.steps}",
        # measure, do not stop: the verdict is read back
        "federation.validation.max_loss_ratio=1000",
        "federation.validation.max_reid_auc=1.0",
        "federation.validation.min_diagnosis_agreement=0.0",
        f"federation.validation.images={args.images}",
        f"evaluate.verifier.steps={args.judge_steps}",
        f"evaluate.classifier.steps={args.judge_steps}",
    ]
    if noise is not None:
        overrides += [
            "federation.dp.enabled=true",
            f"federation.dp.noise_multiplier={noise}",
            f"federation.dp.clipping_norm={args.clipping_norm}",
        ]
    cfg = load_config(config, overrides)
    sites, judges = prepare_sites(cfg, config, args, work)
    out = work / f"{config}-{'plain' if noise is None else f'dp{noise:g}'}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generate_signing_key(out / "sign.pem", out / "sign.pub")
    homes = [out / "homes" / s.name for s in sites]
    for home in homes:
        home.mkdir(parents=True)
        shutil.copytree(judges / home.name, home / "verifier")
    load_before = os.getloadavg()
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
    run_s = time.perf_counter() - started
    metadata = verify_model(out / "anonymizer", load_public_key(out / "sign.pub"))["metadata"]
    checked = metadata["validation"]["privacy"]
    return {
        "config": config,
        "noise_multiplier": noise,
        "clipping_norm": args.clipping_norm if noise is not None else None,
        "epsilon": metadata.get("privacy", {}).get("epsilon"),
        "delta": metadata.get("privacy", {}).get("delta"),
        "val_loss": {s: v["candidate_loss"] for s, v in metadata["validation"]["stages"].items()},
        "initial_val_loss": {s: v["accepted_loss"] for s, v in metadata["validation"]["stages"].items()},
        "reid_auc": checked["candidate"]["reid_auc"],  # output vs input, the sites' own verifiers
        "diagnosis_agreement": checked["candidate"]["diagnosis_agreement"],
        "films_checked": checked["images"],
        "run_s": run_s,
        "loadavg_before": load_before,  # a shared machine: how busy it was
        "loadavg_after": os.getloadavg(),
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
    parser.add_argument("--images", type=int, default=16, help="held-out films per site in the re-ID check")
    parser.add_argument(
        "--judge-steps", type=int, default=300, help="training steps of each site's verifier and classifier"
    )
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
    print(f"{'noise':>6} {'epsilon':>9} {'re-ID AUC':>9} {'diag agr':>9} {'val loss ae/den':>16} {'s':>6}")
    for r in results:
        eps = "inf" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
        losses = "/".join(f"{v:.3g}" for v in r["val_loss"].values())
        print(
            f"{r['noise_multiplier'] or 0:>6g} {eps:>9} {r['reid_auc']:>9.3f} "
            f"{r['diagnosis_agreement'] or float('nan'):>9.3f} {losses:>16} {r['run_s']:>6.0f}"
        )


if __name__ == "__main__":
    main()
