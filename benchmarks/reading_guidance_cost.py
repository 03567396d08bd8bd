"""What reading guidance costs: generative anonymizing time with the findings told, estimated
without reading guidance, and estimated with it (the model's `anonymize.reading_guidance`; with
--all-steps also guiding every DDIM step instead of the last half); with --ddim-steps, each
setting at each number of DDIM steps (default: the model's `anonymize.ddim_steps`).

The same films and seeds for each setting; the settings alternate within each repeat, so drifting
machine load hits them all alike. Run it on an idle machine, one torch thread:

    OMP_NUM_THREADS=1 python benchmarks/reading_guidance_cost.py --model runs/demo/anonymizer \\
        --data runs/demo/federation --films 64 --repeats 3 --all-steps \\
        --json benchmarks/results/reading_guidance_cost.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from measure import load_average, write_report

from privdiff_core.anonymizer import Anonymizer, Conditions
from privdiff_core.data import open_dataset
from privdiff_core.model.reading_guidance import GUIDED_FROM_ALPHA_BAR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="anonymizer folder")
    parser.add_argument("--data", required=True, help="a synthetic federation folder (its test films)")
    parser.add_argument("--films", type=int, default=64, help="first N test films (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per setting (default 3)")
    parser.add_argument("--all-steps", action="store_true", help="also time guiding every DDIM step")
    parser.add_argument(
        "--ddim-steps",
        type=int,
        nargs="+",
        help="time every setting at each of these DDIM step counts (default: the model's own); "
        "'vs unguided' compares with the unguided time at the first",
    )
    parser.add_argument("--json", type=Path, required=True, help="output JSON (a .md table beside it)")
    args = parser.parse_args(argv)
    for path in (args.model, args.data):
        if not Path(path).exists():
            print(f"reading_guidance_cost: {path} does not exist", file=sys.stderr)
            return 2
    anonymizer = Anonymizer.load(args.model)
    models = anonymizer.models
    scale = models.reading_guidance
    if scale == 0:
        print(f"reading_guidance_cost: {args.model} draws without reading guidance", file=sys.stderr)
        return 2
    test = open_dataset(args.data, anonymizer.image_size, split="test", progress=False).load_tensors(
        progress=False
    )
    n = min(args.films, len(test))
    images = test.images[:n]
    untold = Conditions.from_samples(test, findings_told=False).index(slice(0, n))
    told = Conditions.from_samples(test).index(slice(0, n))
    own_rule = GUIDED_FROM_ALPHA_BAR
    step_counts = args.ddim_steps or [int(anonymizer.cfg.anonymize.ddim_steps)]
    # name -> (conditions, guidance scale, guided from a_t)
    kinds = {
        "findings told": (told, scale, own_rule),
        "estimated, no reading guidance": (untold, 0.0, own_rule),
        f"estimated, reading guidance (a_t >= {own_rule})": (untold, scale, own_rule),
    }
    if args.all_steps:
        kinds["estimated, reading guidance on every step"] = (untold, scale, 0.0)
    # name -> (conditions, guidance scale, guided from a_t, DDIM steps)
    settings = {
        f"{kind}, {steps} DDIM steps": (*setting, steps)
        for steps in step_counts
        for kind, setting in kinds.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    load_before = load_average()
    for repeat in range(args.repeats):
        for name, (conditions, guidance, rule, steps) in settings.items():
            models.reading_guidance, models.guided_from_alpha_bar = guidance, rule
            started = time.perf_counter()
            anonymizer.anonymize(images, conditions, seed=repeat, mode="generative", ddim_steps=steps)
            seconds[name].append(time.perf_counter() - started)
            print(f"repeat {repeat} {name}: {seconds[name][-1]:.1f} s", flush=True)
    models.reading_guidance, models.guided_from_alpha_bar = scale, own_rule
    base = statistics.mean(seconds[f"estimated, no reading guidance, {step_counts[0]} DDIM steps"])
    rows = [
        {
            "setting": name,
            "seconds_mean": statistics.mean(values),
            "seconds_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seconds": values,
            "relative_to_unguided": statistics.mean(values) / base,
        }
        for name, values in seconds.items()
    ]
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "model": args.model,
        "films": n,
        "reading_guidance": scale,
        "ddim_steps": step_counts,
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
        "rows": rows,
    }
    table = [
        f"# Reading guidance cost: {n} films, generative mode, {torch.get_num_threads()} torch thread(s)",
        "",
        f"`{payload['command']}` (load average before {load_before}, after {payload['load_after']})",
        "",
        "| setting | seconds (mean ± std) | vs unguided |",
        "|---|---|---|",
        *[
            f"| {r['setting']} | {r['seconds_mean']:.1f} ± {r['seconds_std']:.1f} "
            f"| {r['relative_to_unguided']:.2f}x |"
            for r in rows
        ],
    ]
    write_report(args.json, payload, "\n".join(table))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
