"""How much diagnosis a generative anonymizer can keep when it must estimate the findings itself.

The generative mode draws a new patient from the findings it is given. Told the true findings
(a site that has the report), its diagnosis AUC is the renderer's fidelity A_true. Told nothing
(the evaluation's default, "sensitive"), it draws what its own estimator calls: a yes/no per
finding with sensitivity + specificity - 1 = J (Youden's index). A film drawn "positive" then
scores above one drawn "negative" with probability A_true, so the judge's AUC on the outputs is

    A_est ~= 0.5 + (A_true - 0.5) * J

(a positive film is drawn positive with probability sens, a negative one negative with spec).
Since J <= 2 * AUC_estimator - 1 and the estimator sees no more than the evaluation's judge
(AUC on real films), the generative mode's diagnosis is bounded far below real when the findings
are faint. This script measures every term per finding with ONE real-trained judge:

    real       judge AUC on the real test films
    est_auc    the anonymizer's own estimator (soft), J of its thresholded call
    A_true     judge AUC on generative outputs drawn from the true findings
    A_est      judge AUC on generative outputs drawn from the estimated findings
    predicted  0.5 + (A_true - 0.5) * J

    OMP_NUM_THREADS=1 python benchmarks/estimated_findings_limit.py \
        --model runs/demo/anonymizer --judges runs/demo/evaluation/judges/run_0 \
        --data runs/data-demo --json benchmarks/results/estimated_findings_limit.json

`--judges`: a judges folder `privdiff evaluate` wrote (OUT/judges/run_K); `--config` must be the
config that evaluation ran with (the judge's architecture).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from privdiff_core.anonymizer import Anonymizer, Conditions
from privdiff_core.attributes import FINDINGS, NUM_FINDINGS
from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.evaluation.attackers import AttackerSettings, build_diagnosis


def _scores(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch]).float() for i in range(0, len(images), batch)]).numpy()


def _aucs(labels: np.ndarray, scores: np.ndarray, findings: list[int]) -> np.ndarray:
    return np.array([roc_auc_score(labels[:, k], scores[:, k]) for k in findings])


def measure(model: str, judges: str, data: str, config: str, films: int | None, seed: int) -> dict:
    cfg = load_config(config)
    judge = build_diagnosis(AttackerSettings.from_config(cfg.evaluate.classifier))
    judge.load_state_dict(load_file(str(Path(judges) / "diagnosis.safetensors")))
    judge.eval()
    anonymizer = Anonymizer.load(model)
    test = open_dataset(data, anonymizer.image_size, split="test", progress=False).load_tensors(
        progress=False
    )
    n = len(test) if films is None else min(films, len(test))
    images, labels = test.images[:n], test.labels[:n]
    known = test.label_mask[:n].bool().all(dim=0).numpy()
    truth = labels.numpy()
    findings = [k for k in range(NUM_FINDINGS) if known[k] and 0 < truth[:, k].sum() < n]
    models = anonymizer.models
    told = Conditions(
        age_group=test.age_group[:n], sex=test.sex[:n], labels=labels, label_mask=test.label_mask[:n]
    )
    untold = Conditions(age_group=test.age_group[:n], sex=test.sex[:n])
    with torch.no_grad():
        estimates = torch.cat(
            [models.encoder.estimate(images[i : i + 64])["diagnosis"] for i in range(0, n, 64)]
        ).numpy()
        # the calls exactly as the anonymizer makes them (the threshold row of the told or estimated sex)
        called = (
            torch.cat(
                [
                    models.condition_state(
                        images[i : i + 64], untold.index(slice(i, i + 64)), estimate=True
                    ).diagnosis
                    for i in range(0, n, 64)
                ]
            )
            .numpy()
            .astype(bool)
        )
    sens = np.array([called[truth[:, k] == 1, k].mean() for k in findings])
    spec = np.array([1.0 - called[truth[:, k] == 0, k].mean() for k in findings])
    terms = {
        "real": _aucs(truth, _scores(judge, images), findings),
        "est_auc": _aucs(truth, estimates, findings),
    }
    terms["J"] = sens + spec - 1.0
    for name, conditions in (("A_true", told), ("A_est", untold)):
        out = anonymizer.anonymize(images, conditions, seed=seed, mode="generative", batch_size=64)
        terms[name] = _aucs(truth, _scores(judge, out), findings)
    terms["predicted"] = 0.5 + (terms["A_true"] - 0.5) * terms["J"]
    return {
        "model": model,
        "judges": judges,
        "films": n,
        "mean": {name: float(values.mean()) for name, values in terms.items()},
        "per_finding": {
            FINDINGS[k]: {name: float(values[i]) for name, values in terms.items()}
            for i, k in enumerate(findings)
        },
        "called_positive_rate": float(called[:, findings].mean()),
        "true_positive_rate": float(truth[:, findings].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="anonymizer folder (repeatable)")
    parser.add_argument(
        "--judges", required=True, help="a judges folder of `privdiff evaluate` (OUT/judges/run_K)"
    )
    parser.add_argument("--data", required=True, help="the synthetic federation the judges were trained on")
    parser.add_argument("--config", default="demo", help="the config the evaluation ran with (default demo)")
    parser.add_argument("--films", type=int, default=None, help="first N test films (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", required=True, help="output JSON (rewritten after each model)")
    args = parser.parse_args(argv)
    for path in (*args.model, args.judges, args.data):
        if not Path(path).exists():
            print(f"estimated_findings_limit: {path} does not exist", file=sys.stderr)
            return 2
    out = {"command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(), "models": []}
    for model in args.model:
        load, started = os.getloadavg()[0], time.perf_counter()
        result = measure(model, args.judges, args.data, args.config, args.films, args.seed)
        result.update(seconds=time.perf_counter() - started, load_before=load, load_after=os.getloadavg()[0])
        out["models"].append(result)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{args.json}.tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.json)
        print(model, json.dumps(result["mean"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
