"""The README main job's wall time, run as the README runs it, several times: stage by stage, with
the machine's speed beside each run and the privacy/utility its light evaluation reached.

Each run is `privdiff simulate --config CONFIG --no-progress out=WORK/<stamp>-run<i>` in a process of
its own, with the environment as given except OMP_NUM_THREADS (the README runs the main job without
it; the simulation sets each site's threads itself). Every output line is time-stamped as it
arrives; the stages are the spans between the lines that end them (sites ready, the last
autoencoder round, the last denoiser round, the validation gate, the installing, the anonymizing,
the evaluation). After each run, the reference step of `stage_step_cost.py` (one torch thread, the
denoiser, 30 steps on the run's own site_00) says how fast the machine ran that hour: the build
machine's speed drifts by up to ~18% within a day (benchmarks/results/main_job_times.md).

    python benchmarks/main_job_time.py --repeats 3 --out benchmarks/results/main_job_time.json

Nothing else should run meanwhile (the 1-minute load average is stored before each run). Results
are rewritten after every run; each run's log is kept beside its folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anonymizer_frontier import summarize
from measure import load_average, write_report

HERE = Path(__file__).resolve().parent
# (stage, the line that ends it, which matching line counts); a stage starts where the one before
# it ended (the first at the process start) and a missing line leaves the stage unmeasured.
STAGES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("start", re.compile(r"\d+ sites ready"), "first"),
    ("autoencoder rounds", re.compile(r"\[autoencoder \d+/\d+\] round"), "last"),
    ("denoiser rounds", re.compile(r"\[denoiser \d+/\d+\] round"), "last"),
    ("validation gate", re.compile(r"validation gate (passed|failed)"), "last"),
    ("signing, installing", re.compile(r"installed at \d+ of \d+ sites"), "last"),
    ("anonymizing", re.compile(r"privdiff simulate: evaluation: "), "first"),
    ("evaluation", re.compile(r"evaluation: \d+ s$"), "last"),
)
ROUND = re.compile(r"\[(\w+) \d+/\d+\] round .*\| ([\d.]+) s \|")
# The light evaluation's headline: (row of the report's summary, column, label).
HEADLINE = (
    ("real", "diagnosis_mean_auc", "diagnosis real"),
    ("oracle", "reid_adaptive_auc", "re-ID oracle"),
    ("federated", "reid_adaptive_auc", "re-ID"),
    ("federated", "diagnosis_mean_auc", "diagnosis"),
    ("federated_reports", "diagnosis_mean_auc", "diagnosis told"),
    ("federated", "age_balanced_accuracy_adaptive", "age bal."),
    ("federated", "sex_accuracy_adaptive", "sex"),
    ("federated", "memorization_rate", "memorized"),
)
STAGE_NAMES = [*(name for name, _, _ in STAGES), "rest"]
HEADLINE_LABELS = [label for _, _, label in HEADLINE]


def stage_seconds(lines: list[tuple[float, str]], wall_s: float) -> dict[str, float | None]:
    """Each stage's seconds from the time-stamped lines (seconds since the process started), and
    "rest": from the evaluation's end to the process's exit."""
    out: dict[str, float | None] = {}
    previous = 0.0
    for name, pattern, which in STAGES:
        hits = [t for t, line in lines if pattern.search(line)]
        if not hits:
            out[name] = None
            continue
        ended = hits[0] if which == "first" else hits[-1]
        out[name] = ended - previous
        previous = ended
    out["rest"] = wall_s - previous
    return out


def headline(report_path: Path) -> dict[str, float | None]:
    """The light evaluation's numbers the README states, from the run's report.json."""
    if not report_path.is_file():
        return {}
    rows = summarize(json.loads(report_path.read_text()))["methods"]
    out: dict[str, float | None] = {}
    for row, column, label in HEADLINE:
        value = (rows.get(row) or {}).get(column)
        out[label] = value.get("mean") if isinstance(value, dict) else value
    return out


def reference_step(site: Path, config: str) -> float | None:
    """Seconds of one denoiser step on one torch thread (stage_step_cost.py's median of 30)."""
    if not site.is_dir():
        return None
    out = site.parent.parent / "reference-step.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(HERE / "stage_step_cost.py"), "--data", str(site), "--config", config]
    command += ["--stage", "denoiser", "--variant", "auto=train.denoiser.cpu_precision=auto", "--steps", "30"]
    done = subprocess.run([*command, "--json", str(out)], env=env, capture_output=True, text=True)
    if done.returncode != 0:  # the main job's numbers still count: the run is kept without it
        print(f"reference step failed (exit {done.returncode}): {done.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(out.read_text())["variants"][0]["seconds_per_step"]


def run_main_job(config: str, run_dir: Path, echo: bool) -> dict[str, Any]:
    """One main job; its stages, rounds, wall and exit status. The log goes to run_dir.log."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [
        str(Path(sys.executable).with_name("privdiff")),
        "simulate",
        "--config",
        config,
        "--no-progress",
        f"out={run_dir}",
    ]
    load_before = load_average()
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    with (
        open(run_dir.with_name(run_dir.name + ".log"), "w") as log,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process,
    ):
        assert process.stdout is not None
        for raw in process.stdout:
            at = time.perf_counter() - started
            line = raw.rstrip("\n")
            lines.append((at, line))
            stamped = f"{at:7.1f} {line}"
            log.write(stamped + "\n")
            log.flush()
            if echo:
                print(stamped, flush=True)
        status = process.wait()
    wall_s = time.perf_counter() - started
    rounds: dict[str, list[float]] = {}
    for _, line in lines:
        match = ROUND.search(line)
        if match:
            rounds.setdefault(match.group(1), []).append(float(match.group(2)))
    return {
        "command": " ".join(["privdiff", *command[1:]]),
        "folder": str(run_dir),
        "exit_status": status,
        "wall_s": wall_s,
        "stages_s": stage_seconds(lines, wall_s),
        "rounds_s": rounds,
        "load_before": load_before,
        "load_after": load_average(),
    }


def _mean_std(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "min": min(values), "max": max(values)}


def summary(runs: list[dict[str, Any]], target_min: float) -> dict[str, Any]:
    done = [run for run in runs if run["exit_status"] == 0]
    stages = {
        name: _mean_std([run["stages_s"][name] for run in done if run["stages_s"].get(name) is not None])
        for name in STAGE_NAMES
    }
    walls = [run["wall_s"] / 60 for run in done]
    return {
        "runs": len(runs),
        "finished": len(done),
        "wall_min": _mean_std(walls),
        "within_target": sum(w <= target_min for w in walls),
        "target_min": target_min,
        "stages_s": stages,
        "reference_step_s": _mean_std([r["reference_step_s"] for r in done if r.get("reference_step_s")]),
        "headline": {
            label: _mean_std([r["headline"][label] for r in done if r["headline"].get(label) is not None])
            for label in HEADLINE_LABELS
        },
    }


def _fmt(entry: dict[str, float] | None, scale: str = "{:.1f}") -> str:
    if entry is None:
        return "-"
    return f"{scale.format(entry['mean'])} ± {scale.format(entry['std'])}"


def markdown(payload: dict[str, Any]) -> str:
    runs, total = payload["runs"], payload["summary"]
    lines = [
        "# The README main job's wall time, stage by stage",
        "",
        f"`{payload['command']}` at {payload['commit']}; the main job as the README runs it "
        f"(`{runs[0]['command'] if runs else ''}`), one run after the other.",
        "",
        f"Wall: **{_fmt(total['wall_min'], '{:.2f}')} min** over {total['finished']} finished run(s) "
        f"of {total['runs']}; {total['within_target']} within {total['target_min']:g} min. Reference "
        f"step (one torch thread, the denoiser, right after each run): "
        f"{_fmt(total['reference_step_s'], '{:.3f}')} s.",
        "",
        "| run | wall (min) | " + " | ".join(STAGE_NAMES) + " | reference step (s) | load before |",
        "|---|---|" + "---|" * len(STAGE_NAMES) + "---|---|",
    ]
    for i, run in enumerate(runs, 1):
        cells = ["-" if run["stages_s"].get(n) is None else f"{run['stages_s'][n]:.0f}" for n in STAGE_NAMES]
        step = run.get("reference_step_s")
        lines.append(
            f"| {i}{'' if run['exit_status'] == 0 else ' (failed)'} | {run['wall_s'] / 60:.2f} | "
            + " | ".join(cells)
            + f" | {'-' if step is None else f'{step:.3f}'} | {run['load_before'][0]} |"
        )
    cells = [_fmt(total["stages_s"][n], "{:.0f}") for n in STAGE_NAMES]
    lines.append(f"| mean ± std | {_fmt(total['wall_min'], '{:.2f}')} | " + " | ".join(cells) + " | | |")
    lines += ["", "Rounds (s) per run:", ""]
    for i, run in enumerate(runs, 1):
        rounds = "; ".join(f"{k} {', '.join(f'{s:.1f}' for s in v)}" for k, v in run["rounds_s"].items())
        lines.append(f"- run {i}: {rounds}")
    lines += [
        "",
        "Each run's light evaluation (the numbers the README states; a run is a fresh training):",
        "",
        "| run | " + " | ".join(HEADLINE_LABELS) + " |",
        "|---|" + "---|" * len(HEADLINE_LABELS),
    ]
    for i, run in enumerate(runs, 1):
        values = [run["headline"].get(label) for label in HEADLINE_LABELS]
        lines.append(f"| {i} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |")
    means = [_fmt(total["headline"][label], "{:.3f}") for label in HEADLINE_LABELS]
    lines.append("| mean ± std | " + " | ".join(means) + " |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        git = {"capture_output": True, "text": True, "check": True}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **git)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo", help="the main job's config (the README's: demo)")
    parser.add_argument("--repeats", type=int, default=3, help="main jobs, one after the other")
    parser.add_argument("--work", type=Path, default=Path("runs/main-job-time"), help="run folders and logs")
    parser.add_argument("--target-minutes", type=float, default=20.0, help="each run's limit (min)")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder (default: the last)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the main job's lines")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/main_job_time.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not Path(sys.executable).with_name("privdiff").is_file():
        parser.error(f"no privdiff command beside {sys.executable}: run with privdiff's environment's python")
    payload: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/main_job_time.py", *argv]),
        "commit": _commit(),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.work.mkdir(parents=True, exist_ok=True)
    previous: Path | None = None
    for i in range(1, args.repeats + 1):
        run_dir = args.work / f"{stamp}-run{i}"
        print(f"main job {i}/{args.repeats} -> {run_dir}", flush=True)
        run = run_main_job(args.config, run_dir, echo=not args.quiet)
        run["reference_step_s"] = reference_step(run_dir / "federation" / "site_00", args.config)
        run["headline"] = headline(run_dir / "evaluation" / "report.json")
        payload["runs"].append(run)
        payload["summary"] = summary(payload["runs"], args.target_minutes)
        write_report(args.out, payload, markdown(payload))  # results as they come
        print(f"main job {i}: {run['wall_s'] / 60:.2f} min, exit {run['exit_status']}", flush=True)
        if previous is not None and not args.keep:
            shutil.rmtree(previous, ignore_errors=True)
        previous = run_dir
    print(markdown(payload))
    return 0 if all(run["exit_status"] == 0 for run in payload["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
