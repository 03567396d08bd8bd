"""How a trained anonymizer's findings estimator reads films it learned and films it did not, and
how many findings it calls on each: the calls the generative mode draws (with estimated findings).

For each anonymizer: the mean AUC over the findings of `encoder.estimate` on a federation's pooled
training films (or `--train-films` of them) and its test films, and the findings called per film
at the model's finding thresholds (`PrivDiffModels.finding_thresholds_for`, each film's own sex row)
beside the true findings per film. A network that memorizes its training films reads them surer
than new ones, and thresholds measured on training films (`StageTrainer.finish`) then call fewer
findings on new films than they have.

    OMP_NUM_THREADS=1 python benchmarks/findings_calls.py --data runs/demo/federation \\
        --model s24=runs/s24/demo/anonymizer --model s25=runs/s25/demo/anonymizer \\
        --json benchmarks/results/findings_calls_session25.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from measure import write_report

from privdiff_core.attributes import NUM_SEXES
from privdiff_core.data import open_dataset
from privdiff_core.data.dataset import CXRTensors
from privdiff_core.evaluation.attackers import per_finding_auc
from privdiff_core.model.folder import load_models


def read_split(models, films: CXRTensors, batch: int = 64) -> dict:
    """The estimator's mean finding AUC on `films`, its calls per film and the true findings per film."""
    probs = models.finding_probabilities(films.images, batch)
    sex = torch.nn.functional.one_hot(films.sex.long().clamp(0, NUM_SEXES - 1), NUM_SEXES).float()
    calls = (probs >= models.finding_thresholds_for(sex)).float() * films.label_mask.float()
    truth = films.labels.float() * films.label_mask.float()
    auc = per_finding_auc(films.labels.numpy(), films.label_mask.numpy(), probs.numpy())["mean_auc"]
    return {
        "films": len(films),
        "auc": float(auc),
        "calls_per_film": float(calls.sum(1).mean()),
        "true_findings_per_film": float(truth.sum(1).mean()),
        "mean_probability": float(probs.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a federation folder (site_XX folders)")
    parser.add_argument("--model", action="append", required=True, help="NAME=anonymizer folder (repeatable)")
    parser.add_argument("--train-films", type=int, default=512, help="training films read (the first N)")
    parser.add_argument("--json", required=True, help="output JSON (a Markdown table beside it)")
    args = parser.parse_args(argv)
    out: dict = {"command": " ".join(["python", "benchmarks/findings_calls.py", *argv]), "models": []}
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"--model {spec!r}: expected NAME=FOLDER")
        models, cfg, _ = load_models(folder)
        size = int(cfg.image_size)
        splits = {
            "train": open_dataset(args.data, size, "train", progress=False).load_tensors(progress=False),
            "test": open_dataset(args.data, size, "test", progress=False).load_tensors(progress=False),
        }
        train = splits["train"]
        splits["train"] = train.subset(range(min(args.train_films, len(train))))
        row = {"name": name, "folder": folder, **{k: read_split(models, v) for k, v in splits.items()}}
        out["models"].append(row)
        print(
            f"{name}: train AUC {row['train']['auc']:.3f}, test AUC {row['test']['auc']:.3f}, "
            f"calls per test film {row['test']['calls_per_film']:.2f} "
            f"(truly {row['test']['true_findings_per_film']:.2f})",
            flush=True,
        )
    lines = [
        "# Findings estimator: training films against new ones, and its calls",
        "",
        f"`{out['command']}`",
        "",
        f"Train: the first {args.train_films} pooled training films; test: all test films. Calls at",
        "the model's finding thresholds (each film's sex row).",
        "",
        "| model | train AUC | test AUC | calls per film, train / test | true per film, test |",
        "|---|---|---|---|---|",
    ]
    for r in out["models"]:
        lines.append(
            f"| {r['name']} | {r['train']['auc']:.3f} | {r['test']['auc']:.3f} | "
            f"{r['train']['calls_per_film']:.2f} / {r['test']['calls_per_film']:.2f} | "
            f"{r['test']['true_findings_per_film']:.2f} |"
        )
    write_report(Path(args.json), out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
