"""Round cost vs number of sites: 3, 10, 30 virtual sites, 0% and 20% dropping out mid-round.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/site_scaling.py --budget 1800 \\
        --out benchmarks/results/site_scaling.json

Every point is one run of federation_rounds.run_variant (the real plan in Flower's simulation
engine, 1 local step per round, round 1 untimed, median of the others) for a model (tiny, demo),
a variant (plain FedAvg, SecAgg+ privdiff, SecAgg+ Flower stock), a number of sites and a dropout
fraction. Points run cheapest first (tiny before demo, fewer sites first); once --budget seconds
have passed, the rest are recorded as not run, so the sweep is bounded on a shared machine.
--resume keeps the points --out already holds and runs only the missing ones of the grid given,
with a budget of its own (the fits then cover all of them).

Then, per model, variant and dropout, straight-line fits over the sites n:
- round time = a + b n (s): b is what one more site adds to a round;
- server memory = a + b n (MB the run added to the peak resident set of the process that runs the
  ServerApp and the simulation driver);
- SecAgg+ bytes a site sends beyond its masked update = c0 + c1 k, k = the neighbourhood
  (num_shares: all sites up to 5, else 2 ceil(log2 n) + 1): c1 is the key-sharing bytes per
  neighbour, the term that grows with the neighbourhood, beside the update's fixed 4 bytes/param;
- SecAgg+ extra time over plain at the same n, fitted against n and against n k: the smaller
  residual says whether per-site work or per-neighbour-pair work (key shares, unmasking) grows it.
Virtual sites share the 2 cores, so on this machine round time grows with n mostly because the
sites' work queues: the ratios and byte counts carry over to a real network, absolute times do not.
Writes JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from federation_rounds import VARIANTS, run_variant
from measure import load_average, write_report

MB = 1e6


def grid(models: list[str], sites: list[int], dropouts: list[float], variants: list[str]) -> list[dict]:
    """The points in the order they run: cheap models and small federations first."""
    return [
        {"model": m, "sites": n, "dropout": d, "variant": v}
        for m in models
        for n in sorted(sites)
        for d in dropouts
        for v in variants
    ]


def point_key(point: dict[str, Any]) -> tuple:
    return (point["model"], point["sites"], point["dropout"], point["variant"])


def grid_order(point: dict[str, Any]) -> tuple:
    """Where a point stands in the tables: models by size, then sites, dropout, variant."""
    sizes = ("tiny", "demo", "dense50m")
    model = sizes.index(point["model"]) if point["model"] in sizes else len(sizes)
    return (model, point["sites"], point["dropout"], list(VARIANTS).index(point["variant"]))


def line_fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Least-squares y = a + b x and its largest residual relative to y (None under 2 points)."""
    if len(set(xs)) < 2:
        return None
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    residual = max(abs(a + b * x - y) / abs(y) for x, y in zip(xs, ys, strict=True) if y)
    return {"a": float(a), "b": float(b), "max_relative_residual": float(residual), "points": len(xs)}


def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """p of y ~ x^p, least squares in log-log (None under 2 points or a non-positive y): 1 is
    linear in the sites, above 1 grows faster than the sites do."""
    if len(set(xs)) < 2 or min(ys) <= 0:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def fits(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = [r for r in results if "round_s_median" in r]
    out = []
    for key in dict.fromkeys((r["model"], r["variant"], r["dropout"]) for r in done):
        rows = sorted(
            (r for r in done if (r["model"], r["variant"], r["dropout"]) == key), key=lambda r: r["sites"]
        )
        n = [r["sites"] for r in rows]
        entry: dict[str, Any] = {
            "model": key[0],
            "variant": key[1],
            "dropout": key[2],
            "sites": n,
            "round_s": line_fit(n, [r["round_s_median"] for r in rows]),
            "round_s_exponent": growth_exponent(n, [r["round_s_median"] for r in rows]),
            # peak over the process's resident set at the start of the run: what the run added
            # (the absolute peak also carries what earlier runs in this process left resident)
            "server_added_mb": line_fit(
                n, [r["server_peak_rss_mb"] - r["server_resident_before_mb"] for r in rows]
            ),
        }
        if VARIANTS[key[1]][0]:  # SecAgg+: what grows with the neighbourhood
            k = [r["num_shares"] for r in rows]
            overhead = [r["sent_bytes_per_site"] - r["expected_sent_bytes"] for r in rows]
            entry["num_shares"] = k
            entry["key_sharing_bytes_per_site"] = overhead
            entry["key_sharing_bytes"] = line_fit(k, overhead)
            plain = {
                r["sites"]: r["round_s_median"]
                for r in done
                if (r["model"], r["variant"], r["dropout"]) == (key[0], "plain", key[2])
            }
            paired = [
                (r["sites"], nk, r["round_s_median"] - plain[r["sites"]])
                for r, nk in zip(rows, k, strict=True)
                if r["sites"] in plain
            ]
            if len(paired) >= 2:
                entry["extra_over_plain_s"] = [e for _, _, e in paired]
                entry["extra_vs_n"] = line_fit([s for s, _, _ in paired], [e for _, _, e in paired])
                entry["extra_vs_n_k"] = line_fit([s * nk for s, nk, _ in paired], [e for _, _, e in paired])
        out.append(entry)
    return out


def table(results: list[dict[str, Any]], fitted: list[dict[str, Any]]) -> str:
    rows = [
        "Measured on a loaded machine (2 CPU cores shared by several engineers; virtual sites share "
        "them, so time grows with the sites' queued work). Load averages per point are in the JSON.",
        "",
        "| model | sites | dropout | dropped | variant | round (s, median) | sent/site (MB) | "
        "received/site (MB) | server peak RSS (MB) | server peak over start (MB) | load 1m before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "round_s_median" not in r:
            rows.append(
                f"| {r['model']} | {r['sites']} | {r['dropout']:.0%} | - | {r['variant']} | "
                f"not run: {r['not_run']} | - | - | - | - | - |"
            )
            continue
        rows.append(
            f"| {r['model']} | {r['sites']} | {r['dropout']:.0%} | {len(r['dropped_sites'])} | "
            f"{r['variant']} | "
            f"{r['round_s_median']:.2f} | {r['sent_bytes_per_site'] / MB:.2f} | "
            f"{r['received_bytes_per_site'] / MB:.2f} | {r['server_peak_rss_mb']:.0f} | "
            f"{r['server_peak_rss_mb'] - r['server_resident_before_mb']:.0f} | "
            f"{r['load_average_before'][0]:.2f}/{r['load_average_after'][0]:.2f} |"
        )
    rows += [
        "",
        "Fits over the sites n (a + b n; worst residual relative to the point):",
        "",
        "| model | variant | dropout | round s: a + b n | round s ~ n^p: p | server MB added: a + b n | "
        "key-sharing bytes/site: c0 + c1 k | SecAgg+ extra s: fit vs n / vs n k (worst residual) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def show(fit: dict | None, unit: str = "") -> str:
        if fit is None:
            return "-"
        if fit["points"] == 2:
            return f"{fit['a']:.3g} + {fit['b']:.3g} {unit} (2 points)"
        worst = fit["max_relative_residual"]
        return f"{fit['a']:.3g} + {fit['b']:.3g} {unit} ({fit['points']} points, worst {worst:.0%})"

    for f in fitted:
        extra = "-"
        if f.get("extra_vs_n"):
            n_fit, nk_fit = f["extra_vs_n"], f["extra_vs_n_k"]
            extra = (
                "2 points"
                if n_fit["points"] == 2
                else f"n: {n_fit['max_relative_residual']:.0%} / n k: {nk_fit['max_relative_residual']:.0%}"
            )
        rows.append(
            f"| {f['model']} | {f['variant']} | {f['dropout']:.0%} | {show(f['round_s'], 'n')} | "
            f"{'-' if f['round_s_exponent'] is None else format(f['round_s_exponent'], '.2f')} | "
            f"{show(f['server_added_mb'], 'n')} | {show(f.get('key_sharing_bytes'), 'k')} | {extra} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,demo", help="comma-separated: tiny, demo, dense50m")
    parser.add_argument("--sites", default="3,10,30", help="comma-separated numbers of virtual sites")
    parser.add_argument("--dropouts", default="0,0.2", help="comma-separated fractions of sites dropping out")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per point; the first is not timed")
    parser.add_argument("--retries", type=int, default=1, help="reruns of a point that failed (default 1)")
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds; later points are not run")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/site_scaling.json"),
        help="JSON (and .md beside it)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the points --out already holds; run only the others"
    )
    args = parser.parse_args()
    try:
        points = grid(
            args.models.split(","),
            [int(n) for n in args.sites.split(",")],
            [float(d) for d in args.dropouts.split(",")],
            args.variants.split(","),
        )
    except ValueError as err:
        parser.error(f"--sites and --dropouts take comma-separated numbers ({err})")
    if unknown := {p["variant"] for p in points} - set(VARIANTS):
        parser.error(f"unknown variant {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 2:
        parser.error("--rounds must be >= 2: the first round is not timed")
    torch.set_num_threads(1)
    payload: dict[str, Any] = {
        "benchmark": "site_scaling",
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "rounds": args.rounds,
        "budget_s": args.budget,
        "load_average_before": load_average(),
        "results": [],
        "fits": [],
    }
    if args.resume and args.out.is_file():  # keep what an earlier sweep measured; run the rest
        earlier = json.loads(args.out.read_text())
        measured = [r for r in earlier["results"] if "round_s_median" in r]
        done = {point_key(r) for r in measured}
        points = [p for p in points if point_key(p) not in done]
        wanted = {point_key(p) for p in points}
        payload["results"] = measured + [
            r for r in earlier["results"] if "not_run" in r and point_key(r) not in wanted
        ]
        payload["resumed_from"] = {
            k: earlier.get(k) for k in ("load_average_before", "elapsed_s", "budget_s")
        }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="site-scaling-") as tmp:
        for point in points:
            elapsed = time.perf_counter() - started
            if elapsed > args.budget:
                payload["results"].append({**point, "not_run": f"budget of {args.budget:g} s spent"})
                continue
            print(f"== {point} (at {elapsed:.0f} s)", flush=True)
            failures = []
            for _ in range(1 + args.retries):  # Ray's start-up can time out on an overloaded machine
                try:
                    result = run_variant(
                        point["model"],
                        point["variant"],
                        args.rounds,
                        Path(tmp),
                        point["sites"],
                        point["dropout"],
                    )
                    break
                except (
                    Exception
                ) as err:  # a failed point is a result too (e.g. a neighbourhood lost its quorum)
                    traceback.print_exc()
                    failures.append(f"{type(err).__name__}: {err}")
                    result = {**point, "not_run": f"failed: {failures[-1]}"}
            result["failed_attempts"] = failures
            payload["results"].append(result)
            payload["fits"] = fits(payload["results"])
            payload["load_average_after"] = load_average()
            payload["elapsed_s"] = time.perf_counter() - started
            write_report(args.out, payload, table(payload["results"], payload["fits"]))
    payload["results"].sort(key=grid_order)
    payload["fits"] = fits(payload["results"])
    write_report(args.out, payload, table(payload["results"], payload["fits"]))
    print(table(payload["results"], payload["fits"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
