"""The anonymizer against the oracle limit: privacy/utility of each mode, with runs' mean and std.

Runs `privdiff evaluate` once on a trained anonymizer (both anonymize modes, optionally several
strengths, the oracle, the autoencoder alone and DP-Pix) with `evaluate.runs` independent runs
(outputs drawn again, pairs redrawn, attackers retrained: `evaluate.anonymize_per_run`), then
writes the summary a reader needs as JSON and a Markdown table: retrained (adaptive) re-ID AUC,
hard-negative re-ID, precision@1, diagnosis AUC, age/sex accuracy vs chance, memorization, SSIM,
and each method's distance to the oracle floor and to real diagnosis.

    OMP_NUM_THREADS=1 python benchmarks/anonymizer_frontier.py --model runs/central/anonymizer \
        --data runs/data-demo --out runs/frontier --json benchmarks/results/anonymizer_frontier.json

Extra `key=value` arguments go to `privdiff evaluate` (e.g. the light settings of
`federation.simulation.evaluation`); `--conditions sensitive,all` evaluates each model with its
findings estimated and told (NAME_reports).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = (
    ("reid_adaptive_auc", "re-ID retrained"),
    ("reid_hard_adaptive_auc", "re-ID hard neg."),
    ("retrieval_adaptive_p1", "P@1"),
    ("diagnosis_mean_auc", "diagnosis AUC"),
    ("age_accuracy_adaptive", "age acc"),
    ("age_balanced_accuracy_adaptive", "age bal."),
    ("age_balanced_accuracy", "age bal. real-trained"),
    ("sex_accuracy_adaptive", "sex acc"),
    ("memorization_rate", "memorized"),
)


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    if entry.get("runs", 1) > 1:
        return f"{entry['mean']:.3f} ± {entry['std']:.3f}"
    return f"{entry['mean']:.3f}"


def summarize(report: dict) -> dict:
    """The numbers of the table, per method, from a `privdiff evaluate` report.json."""
    real = report["real"]["summary"]
    rows = {
        "real": {
            "label": "Real images",
            "reid_adaptive_auc": real.get("reid_auc"),
            "reid_hard_adaptive_auc": real.get("reid_hard_naive_auc"),
            "retrieval_adaptive_p1": real.get("retrieval_naive_p1"),
            "diagnosis_mean_auc": real.get("diagnosis_mean_auc"),
            "age_accuracy_adaptive": real.get("age_accuracy"),
            "age_balanced_accuracy_adaptive": real.get("age_balanced_accuracy"),
            "age_balanced_accuracy": real.get("age_balanced_accuracy"),
            "sex_accuracy_adaptive": real.get("sex_accuracy"),
        }
    }
    for name, result in report["methods"].items():
        summary = result["summary"]
        row = {"label": result["method"]["label"]}
        row.update({key: summary.get(key) for key, _ in COLUMNS})
        quality = result.get("quality") or {}
        row["ssim"], row["fd"], row["detail"] = (
            quality.get("ssim_mean"),
            quality.get("fd"),
            quality.get("detail"),
        )
        rows[name] = row
    per_finding = {"real": _per_finding(report["real"])}
    per_finding.update({name: _per_finding(result) for name, result in report["methods"].items()})
    for name, findings in per_finding.items():
        rows[name]["diagnosis_per_finding"] = findings
    return {
        "chance": {
            "age": real.get("age_chance"),
            "sex": real.get("sex_chance"),
            "age_balanced": real.get("age_balanced_chance"),
        },
        "limits": report.get("limits"),
        "methods": rows,
    }


def _per_finding(result: dict) -> dict[str, float]:
    """Each finding's diagnosis AUC, the mean of the runs that measured it (the mean over findings
    hides which findings an anonymizer keeps: a rare one swings by 0.1-0.2 between runs)."""
    values: dict[str, list[float]] = {}
    for run in result.get("runs") or []:
        for finding, auc in ((run.get("diagnosis") or {}).get("per_finding") or {}).items():
            if auc is not None:
                values.setdefault(finding, []).append(float(auc))
    return {finding: sum(aucs) / len(aucs) for finding, aucs in values.items()}


def _per_finding_table(methods: dict) -> list[str]:
    named = {
        name: row["diagnosis_per_finding"]
        for name, row in methods.items()
        if row.get("diagnosis_per_finding")
    }
    if not named:
        return []
    findings = list(next(iter(named.values())))
    lines = [
        "",
        "Diagnosis AUC per finding (mean of the runs):",
        "",
        "| finding | " + " | ".join(named) + " |",
        "|" + "---|" * (len(named) + 1),
    ]
    for finding in findings:
        cells = " | ".join("-" if finding not in aucs else f"{aucs[finding]:.3f}" for aucs in named.values())
        lines.append(f"| {finding} | {cells} |")
    return lines


def markdown(summary: dict, command: str, load: tuple[float, float] | None) -> str:
    header = "| method | " + " | ".join(title for _, title in COLUMNS) + " | SSIM | FD | fine detail |"
    lines = [
        "# Anonymizer vs the oracle limit",
        "",
        f"`{command}`",
        "",
        f"Load average before/after: {load[0]:.1f} / {load[1]:.1f} (2 cores: above 2, shared)."
        if load
        else "Summarized from finished evaluations (their load is not recorded here).",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 4),
    ]
    for row in summary["methods"].values():
        quality = " | ".join("-" if row.get(key) is None else f"{row[key]:.3g}" for key in ("ssim", "fd"))
        quality += " | -" if row.get("detail") is None else f" | {row['detail']:.0%}"
        cells = " | ".join(_cell(row.get(key)) for key, _ in COLUMNS)
        lines.append(f"| {row['label']} | {cells} | {quality} |")
    chance = summary["chance"]
    lines += [
        "",
        f"Chance: age {_cell(chance['age'])} (always answering the attacker's training films' commonest "
        f"group), balanced {_cell(chance.get('age_balanced'))} (any answer blind to the group); "
        f"sex {_cell(chance['sex'])}; re-ID 0.5.",
        *_per_finding_table(summary["methods"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        help="[NAME=]anonymizer folder (or privdiff train run); repeat to compare models",
    )
    parser.add_argument("--data", help="synthetic federation folder (privdiff synth)")
    parser.add_argument("--out", help="evaluation folder (reused when run again)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--runs", type=int, default=3, help="independent evaluation runs (mean, std)")
    parser.add_argument("--modes", default="generative,img2img")
    parser.add_argument("--strengths", default=None, help="img2img strengths, e.g. 0.4,0.8")
    parser.add_argument("--methods", default="oracle,vae,dp_pix")
    parser.add_argument(
        "--conditions", default=None, help="what each model is told, e.g. sensitive,all (privdiff evaluate)"
    )
    parser.add_argument("--json", default="benchmarks/results/anonymizer_frontier.json")
    parser.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="REPORT",
        help="summarize finished `privdiff evaluate` folders (or their report.json) instead of running "
        "one (repeatable: their methods side by side; each run on the same data and judges' settings)",
    )
    parser.add_argument(
        "--legend", default=None, help="what the compared models are (written under the table)"
    )
    args, overrides = parser.parse_known_args(argv)
    if args.report:
        return _summarize_reports(args)
    if not (args.model and args.data and args.out):
        parser.error("give --model, --data and --out (or --report to summarize finished evaluations)")
    command = [
        sys.executable, "-m", "privdiff_core.cli", "evaluate", "--config", args.config, "--no-progress",
        *[part for model in args.model for part in ("--model", model)],
        "--modes", args.modes, "--methods", args.methods,
        f"data={args.data}", f"out={args.out}", f"evaluate.runs={args.runs}",
        # each run draws its own outputs too: the std then covers what a second draw would show
        "evaluate.anonymize_per_run=true", *overrides,
    ]  # fmt: skip
    if args.conditions:
        command[command.index("--methods") : command.index("--methods")] = ["--conditions", args.conditions]
    if args.strengths:
        command[command.index("--methods") : command.index("--methods")] = ["--strengths", args.strengths]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    report = json.loads((Path(args.out) / "report.json").read_text())
    summary = summarize(report)
    shown = " ".join(["privdiff", *command[3:]])
    result = {
        "command": shown,
        "seconds": round(seconds, 1),
        "load_average": [load_before, os.getloadavg()[0]],
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "legend": args.legend,
        **summary,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    legend = f"\n{args.legend}\n" if args.legend else ""
    out.with_suffix(".md").write_text(markdown(summary, shown, tuple(result["load_average"])) + legend)
    print(out.with_suffix(".md").read_text())
    return 0


def _summarize_reports(args: argparse.Namespace) -> int:
    """The table of finished evaluations: their methods side by side, with the commands that ran them."""
    paths = [Path(p) / "report.json" if Path(p).is_dir() else Path(p) for p in args.report]
    reports = [json.loads(path.read_text()) for path in paths]
    summary = summarize(reports[0])
    for report in reports[1:]:
        summary["methods"].update({k: v for k, v in summarize(report)["methods"].items() if k != "real"})
    commands = [report.get("command", "") for report in reports]
    result = {
        "commands": commands,
        "reports": args.report,
        "legend": args.legend,
        "load_average": None,
        **summary,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    text = markdown(summary, " ; ".join(commands), None) + (f"\n{args.legend}\n" if args.legend else "")
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
