"""How far the federated denoiser gets against the same stage trained centrally, by the films one
trajectory has seen.

FedAvg averages the sites' updates: with alike sites the mean moves about as far as one site's,
so a federated stage of R rounds x S local steps of B films follows one trajectory of R x S steps
and R x S x B films, whatever the number of sites. This reads the training loss each round
reached (the server's checkpoint history: the mean of the sites' local losses) and the central
run's loss history over the steps that saw as many films, so the two are compared where they
have seen the same, and says how many central steps the federated stage's last round matches.

    python benchmarks/denoiser_progress.py --federated base=runs/demo \\
        --central central=runs/s30/central --json benchmarks/results/denoiser_progress.json

A federated RUN is a `privdiff simulate` out= folder (checkpoint.pt, config.yaml); a central RUN
a `privdiff train` out= folder (metrics.json, config.yaml).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from measure import write_report

from privdiff.server.checkpoint import load_checkpoint
from privdiff_core.config import load_config
from privdiff_core.training import stage_batch_size

STAGE = "denoiser"


def _named(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=RUN_FOLDER, got {text!r}")
    return name, Path(folder)


def federated_rounds(run: Path) -> dict[str, Any]:
    """Each denoiser round's loss, with the steps and films of one trajectory up to its end."""
    cfg = load_config(str(run / "config.yaml"))
    state = load_checkpoint(run, cfg)
    if state is None:
        raise SystemExit(f"{run}: no checkpoint.pt (a `privdiff simulate` out= folder?)")
    steps = int(cfg.federation.local_steps[STAGE])
    batch = stage_batch_size(cfg, STAGE)
    rounds = [h for h in state.history if h.get("stage") == STAGE]
    if not rounds:
        raise SystemExit(f"{run}: no denoiser rounds in its checkpoint history")
    return {
        "sites": int(state.sites),
        "local_steps": steps,
        "batch_size": batch,
        "lr": float(cfg.train[STAGE].lr),
        "rounds": [
            {
                "round": int(h["stage_round"]),
                "steps": int(h["stage_round"]) * steps,
                "films": int(h["stage_round"]) * steps * batch,
                "loss": float(h["loss"]),
                "seconds": float(h["seconds"]),
            }
            for h in rounds
        ],
    }


def central_history(run: Path) -> dict[str, Any]:
    """The central run's denoiser loss at every step, with the batch and lr it trained with."""
    cfg = load_config(str(run / "config.yaml"))
    metrics = json.loads((run / "metrics.json").read_text())
    stage = metrics["stages"][STAGE]
    return {
        "batch_size": stage_batch_size(cfg, STAGE),
        "lr": float(cfg.train[STAGE].lr),
        "steps": int(stage["steps"]),
        "loss_history": [float(x) for x in stage["loss_history"]],
    }


def central_loss(central: dict[str, Any], films_from: int, films_to: int) -> float | None:
    """The central run's mean training loss over the steps that took it from `films_from` to
    `films_to` films (None past its end)."""
    batch = central["batch_size"]
    first, last = films_from // batch, max(films_to // batch, films_from // batch + 1)
    window = central["loss_history"][first:last]
    return statistics.fmean(window) if last <= len(central["loss_history"]) else None


def central_steps_matching(central: dict[str, Any], loss: float, window: int) -> int | None:
    """The first step whose trailing `window`-step mean loss is at or below `loss`."""
    history = central["loss_history"]
    for end in range(window, len(history) + 1):
        if statistics.fmean(history[end - window : end]) <= loss:
            return end
    return None


def compare(federated: dict[str, Any], central: dict[str, Any]) -> list[dict[str, Any]]:
    rows, previous = [], 0
    for r in federated["rounds"]:
        rows.append({**r, "central_loss_same_films": central_loss(central, previous, r["films"])})
        previous = r["films"]
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = ["# The federated denoiser's progress against central training, by films seen", ""]
    for name, c in report["central"].items():
        tail = statistics.fmean(c["loss_history"][-100:])
        lines.append(
            f"Central `{name}`: {c['steps']} steps of {c['batch_size']} films, lr {c['lr']:g}, "
            f"its last 100 steps' mean loss {tail:.4f}."
        )
    lines += [
        "",
        "Training loss of one trajectory (federated: the round's mean over its sites' local steps; "
        "central: the mean over the steps that saw the same films). Columns: the films one "
        "trajectory had seen by the end of each quarter of the federated rounds.",
        "",
        "| run | sites | local steps x films, lr | rounds | loss by quarter | central, same films "
        "| central steps to the last round's loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in report["federated"].items():
        for central_name, rows in f["against"].items():
            quarters = [rows[max(0, round(len(rows) * q / 4) - 1)] for q in (1, 2, 3, 4)]
            ours = " / ".join(f"{r['loss']:.4f} ({r['films']})" for r in quarters)
            same = " / ".join(
                "-" if r["central_loss_same_films"] is None else f"{r['central_loss_same_films']:.4f}"
                for r in quarters
            )
            match = f["central_steps_matching"][central_name]
            films = (
                "-"
                if match is None
                else f"{match} ({match * report['central'][central_name]['batch_size']} films)"
            )
            lines.append(
                f"| {name} | {f['sites']} | {f['local_steps']} x {f['batch_size']}, {f['lr']:g} | "
                f"{len(rows)} | {ours} | {same} ({central_name}) | {films} |"
            )
    if report.get("legend"):
        lines += ["", report["legend"]]
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines)


def _command(argv: list[str]) -> str:
    """The command line as run, without the legend's text (the table shows it)."""
    words = list(argv)
    if "--legend" in words:
        at = words.index("--legend")
        del words[at : at + 2]
    return " ".join(["python", *words])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--federated", type=_named, action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--central", type=_named, action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--legend", default="", help="what the runs are (written under the table)")
    args = parser.parse_args()
    central = {name: central_history(run) for name, run in args.central}
    report: dict[str, Any] = {
        "central": central,
        "federated": {},
        "command": _command(sys.argv),
        "legend": args.legend,
    }
    for name, run in args.federated:
        f = federated_rounds(run)
        f["against"] = {c: compare(f, history) for c, history in central.items()}
        # the round's loss is a mean over its local steps: match it with a window as long
        f["central_steps_matching"] = {
            c: central_steps_matching(history, f["rounds"][-1]["loss"], f["local_steps"])
            for c, history in central.items()
        }
        f["run"] = str(run)
        report["federated"][name] = f
    table = markdown(report)
    write_report(args.json, report, table)
    print(table)


if __name__ == "__main__":
    main()
