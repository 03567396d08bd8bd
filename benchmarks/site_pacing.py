"""What keeping simulated sites in step saves: denoiser rounds with and without
`federation.simulation.pace_sites` (privdiff_core/training/pacing.py).

The demo's federation (3 sites, 0.5 CPU each: all three train at once on 2 cores, one torch
thread each) runs rounds of the real plan in Flower's simulation engine with the demo's 55 local
denoiser steps per site; everything but the pacing is the same. The two variants alternate, so
that drifting machine load hits both alike. Round 1 (actor start-up) is not timed.

    OMP_NUM_THREADS=1 python benchmarks/site_pacing.py --repeats 3 --rounds 4 \\
        --out benchmarks/results/site_pacing.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import federation_rounds
from measure import load_average, write_report


def run_once(paced: bool, rounds: int, local_steps: int, work: Path) -> dict[str, Any]:
    overrides = [
        f"federation.local_steps.denoiser={local_steps}",
        f"federation.simulation.pace_sites={str(paced).lower()}",
    ]
    result = federation_rounds.run_variant("demo", "secagg", rounds, work, overrides=overrides)
    return {"paced": paced, "round_s": result["round_s"], "load_before": result["load_average_before"]}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for paced in (False, True):
        rounds = [s for run in runs if run["paced"] == paced for s in run["round_s"]]
        means = [statistics.mean(run["round_s"]) for run in runs if run["paced"] == paced]
        if rounds:
            out["paced" if paced else "unpaced"] = {
                "rounds": len(rounds),
                "round_s_mean": statistics.mean(rounds),
                "round_s_std": statistics.stdev(rounds) if len(rounds) > 1 else 0.0,
                "round_s_max": max(rounds),
                "run_means": means,
            }
    return out


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        f"Denoiser rounds, demo federation (3 sites x {payload['local_steps']} local steps, SecAgg+), "
        f"the variants alternating ({payload['repeats']} runs each asked for); load before/after "
        f"{payload['load_before']} / {payload['load_after']}.",
        "",
        "| sites | runs | timed rounds | round (s), mean +- std | slowest round (s) | run means (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in payload["summary"].items():
        means = ", ".join(f"{m:.1f}" for m in row["run_means"])
        lines.append(
            f"| {name} | {len(row['run_means'])} | {row['rounds']} | "
            f"{row['round_s_mean']:.1f} +- {row['round_s_std']:.1f} | "
            f"{row['round_s_max']:.1f} | {means} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run; the first is not timed")
    parser.add_argument("--local-steps", type=int, default=55, help="local denoiser steps (the demo's 55)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/site_pacing.json"))
    args = parser.parse_args(argv)
    payload: dict[str, Any] = {
        "command": "python benchmarks/site_pacing.py " + " ".join(argv or []),
        "repeats": args.repeats,
        "local_steps": args.local_steps,
        "load_before": load_average(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            for paced in (False, True):
                run = run_once(paced, args.rounds, args.local_steps, Path(work) / f"{repeat}-{paced}")
                payload["runs"].append(run)
                payload["summary"] = summary(payload["runs"])
                payload["load_after"] = load_average()
                write_report(args.out, payload, markdown(payload))  # results as they come
                print(
                    f"run {repeat + 1} {'paced' if paced else 'unpaced'}: rounds {run['round_s']}", flush=True
                )
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
