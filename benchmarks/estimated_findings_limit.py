"""How much diagnosis a generative anonymizer can keep when it must estimate the findings itself.

The generative mode draws a new patient from the findings it is given. Told the true findings
(a site that has the report), its diagnosis AUC is the renderer's fidelity A_true. Told nothing
(the evaluation's default, "sensitive"), it draws what its own estimator calls: a yes/no per
finding with sensitivity + specificity - 1 = J (Youden's index). A film drawn "positive" then
scores above one drawn "negative" with probability A_true, so the judge's AUC on the outputs is

    A_est ~= 0.5 + (A_true - 0.5) * J

(a positive film is drawn positive with probability sens, a negative one negative with spec).
Since J <= 2 * AUC_estimator - 1 and the estimator sees no more than the evaluation's judge
(AUC on real films), yes/no calls keep far less diagnosis than real films when the findings are
faint. Graded calls (`anonymize.finding_softness` > 0: a plainer finding where the estimator is
surer) keep the estimator's ranking instead; the guidance weight `spg.w_diag` sets how plainly a
finding is drawn. Their limit, in the binormal model (scores normal, equal variance; an AUC A is a
separation d = sqrt(2) * Phi^-1(A)): a call separated by d_calls from the truth, drawn as plainly
as a told finding is on average and read by the judge at d_true = sqrt(2) * Phi^-1(A_true), reaches

    predicted_graded = Phi(d_calls * d_true / sqrt(d_calls^2 + d_true^2) / sqrt(2))

per finding: two noisy readings in a row (the estimator's of the film, the judge's of the
drawing) keep less than either. This script measures every term with ONE real-trained judge:

    real       judge AUC on the real test films (per finding, then the mean)
    est_auc    the anonymizer's own estimator (soft); J: Youden's index of its yes/no call
    and for each (spg.w_diag, softness, reading guidance) in --w-diag x --softness x
    --reading-guidance, averaged over --seeds draws:
    A_true     judge AUC on generative outputs drawn from the true findings
    A_est      judge AUC on generative outputs drawn from the estimated findings
    calls_auc  AUC of the calls the denoiser is given (graded or yes/no) against the truth
    calls_linkage_auc  how well those 14 calls alone link a patient's films (true findings:
               true_findings_linkage_auc; the oracle anonymizer keeps that much)
    predicted_yes_no  0.5 + (A_true - 0.5) * J
    predicted_graded  the two readings in a row (above), from calls_auc and A_true per finding

    OMP_NUM_THREADS=1 python benchmarks/estimated_findings_limit.py \
        --model runs/demo/anonymizer --judges runs/demo/evaluation/judges/run_0 \
        --data runs/demo/federation --softness 0,0.5,1,2 --w-diag 6,10 --seeds 3 \
        --json benchmarks/results/estimated_findings_limit.json

`--reading-guidance 0,0.8`: the drawing pulled toward reading as the findings it is given
(privdiff_core/model/reading_guidance.py): A_est can then pass predicted_graded, since the drawing
no longer depends on the 14 calls alone. Told findings are guided too (since session 22), so
A_true is measured at each guidance scale (softness leaves told findings alone: one A_true serves
every softness).

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
from scipy.stats import norm
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


def _linkage_auc(calls: np.ndarray, patients: np.ndarray) -> float:
    """How well the 14 calls alone link a patient's films: AUC of -distance, same vs other patient."""
    pairs = np.triu_indices(len(calls), 1)
    distance = np.linalg.norm(calls[:, None] - calls[None], axis=-1)[pairs]
    same = (patients[:, None] == patients[None, :])[pairs]
    return float(roc_auc_score(same, -distance))


def two_readings_auc(calls_auc: np.ndarray, drawn_auc: np.ndarray) -> np.ndarray:
    """Binormal AUC of a judge reading drawings of calls: the calls separated from the truth as
    `calls_auc` says, a drawing read as `drawn_auc` says for the true findings (see above)."""
    d_calls = np.sqrt(2.0) * norm.ppf(np.clip(calls_auc, 1e-6, 1 - 1e-6))
    d_true = np.sqrt(2.0) * norm.ppf(np.clip(drawn_auc, 1e-6, 1 - 1e-6))
    spread = np.sqrt(d_calls**2 + d_true**2)
    both = np.divide(d_calls * d_true, spread, out=np.zeros_like(spread), where=spread > 0)
    return norm.cdf(both / np.sqrt(2.0))


def measure(
    model: str,
    judges: str,
    data: str,
    config: str,
    films: int | None,
    seeds: list[int],
    softness: list[float] | None,
    w_diag: list[float] | None,
    reading_guidance: list[float] | None = None,
) -> dict:
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
    patients = np.array([str(p) for p in test.patient_ids[:n]])
    findings = [k for k in range(NUM_FINDINGS) if known[k] and 0 < truth[:, k].sum() < n]
    models = anonymizer.models
    told = Conditions.from_samples(test).index(slice(0, n))
    untold = Conditions.from_samples(test, findings_told=False).index(slice(0, n))

    def calls() -> np.ndarray:
        """The findings exactly as the anonymizer hands them to the denoiser (condition_state)."""
        with torch.no_grad():
            return torch.cat(
                [
                    models.condition_state(
                        images[i : i + 64], untold.index(slice(i, i + 64)), estimate=True
                    ).diagnosis
                    for i in range(0, n, 64)
                ]
            ).numpy()

    def outputs_auc(conditions: Conditions) -> np.ndarray:
        runs = [
            _aucs(
                truth,
                _scores(
                    judge,
                    anonymizer.anonymize(images, conditions, seed=seed, mode="generative", batch_size=64),
                ),
                findings,
            )
            for seed in seeds
        ]
        return np.mean(runs, axis=0)

    estimates = models.finding_probabilities(images).numpy()
    own_softness, own_w_diag = models.finding_softness, float(models.cfg.spg.w_diag)
    own_guidance = models.reading_guidance
    models.finding_softness = 0.0
    called = calls() >= 0.5  # yes/no (a graded call is above 0.5 exactly where this is 1)
    sens = np.array([called[truth[:, k] == 1, k].mean() for k in findings])
    spec = np.array([1.0 - called[truth[:, k] == 0, k].mean() for k in findings])
    terms = {
        "real": _aucs(truth, _scores(judge, images), findings),
        "est_auc": _aucs(truth, estimates, findings),
        "J": sens + spec - 1.0,
    }
    settings = []
    for w in w_diag or [own_w_diag]:
        models.cfg.spg.w_diag = w
        for guidance in reading_guidance or [own_guidance]:
            models.reading_guidance = guidance
            a_true = outputs_auc(told)  # softness leaves told findings alone: one per guidance scale
            for soft in softness or [own_softness]:
                models.finding_softness = soft
                graded = calls()
                a_est = outputs_auc(untold)
                calls_auc = _aucs(truth, graded, findings)
                settings.append(
                    {
                        "w_diag": w,
                        "softness": soft,
                        "reading_guidance": guidance,
                        "A_true": float(a_true.mean()),
                        "A_est": float(a_est.mean()),
                        "calls_auc": float(calls_auc.mean()),
                        "calls_linkage_auc": _linkage_auc(graded[:, findings], patients),
                        "predicted_yes_no": float((0.5 + (a_true - 0.5) * terms["J"]).mean()),
                        "predicted_graded": float(two_readings_auc(calls_auc, a_true).mean()),
                        "A_est_per_finding": {FINDINGS[k]: float(a_est[i]) for i, k in enumerate(findings)},
                        "A_true_per_finding": {FINDINGS[k]: float(a_true[i]) for i, k in enumerate(findings)},
                    }
                )
                print(
                    json.dumps({k: v for k, v in settings[-1].items() if "per_finding" not in k}), flush=True
                )
    models.finding_softness, models.cfg.spg.w_diag = own_softness, own_w_diag
    models.reading_guidance = own_guidance
    return {
        "model": model,
        "judges": judges,
        "films": n,
        "seeds": seeds,
        "true_findings_linkage_auc": _linkage_auc(truth[:, findings], patients),
        "mean": {name: float(values.mean()) for name, values in terms.items()},
        "per_finding": {
            FINDINGS[k]: {name: float(values[i]) for name, values in terms.items()}
            for i, k in enumerate(findings)
        },
        "settings": settings,
        "called_positive_rate": float(called[:, findings].mean()),
        "true_positive_rate": float(truth[:, findings].mean()),
    }


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="anonymizer folder (repeatable)")
    parser.add_argument(
        "--judges", required=True, help="a judges folder of `privdiff evaluate` (OUT/judges/run_K)"
    )
    parser.add_argument("--data", required=True, help="the synthetic federation the judges were trained on")
    parser.add_argument("--config", default="demo", help="the config the evaluation ran with (default demo)")
    parser.add_argument("--films", type=int, default=None, help="first N test films (default all)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="output draws per setting, averaged (seeds 0..N-1)"
    )
    parser.add_argument(
        "--softness",
        type=_floats,
        default=None,
        help="anonymize.finding_softness values, e.g. 0,0.5,1 (default: the model's)",
    )
    parser.add_argument(
        "--w-diag", type=_floats, default=None, help="spg.w_diag values, e.g. 6,10 (default: the model's)"
    )
    parser.add_argument(
        "--reading-guidance",
        type=_floats,
        default=None,
        help="anonymize.reading_guidance values, e.g. 0,0.8 (default: the model's)",
    )
    parser.add_argument("--json", required=True, help="output JSON (rewritten after each model)")
    args = parser.parse_args(argv)
    for path in (*args.model, args.judges, args.data):
        if not Path(path).exists():
            print(f"estimated_findings_limit: {path} does not exist", file=sys.stderr)
            return 2
    out = {"command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(), "models": []}
    for model in args.model:
        load, started = os.getloadavg()[0], time.perf_counter()
        result = measure(
            model,
            args.judges,
            args.data,
            args.config,
            args.films,
            list(range(args.seeds)),
            args.softness,
            args.w_diag,
            args.reading_guidance,
        )
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
