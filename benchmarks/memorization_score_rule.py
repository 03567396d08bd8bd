"""The memorization check's score rule: the verifier's whole head against its closeness reading.

`privdiff evaluate` flags an anonymized test film as memorized when its best same-patient score
against the training films exceeds what 0.5% of real unseen (validation) films reach, or its nearest
embedding distance undercuts what 0.5% of them reach (evaluation/linkage.py). This script scores,
for each judge verifier of an evaluation folder (`--judges OUT/judges`), with the whole linear head
on |e1 - e2| and with its closeness reading (`linkage.closeness_head`: the positive weights set to
zero, the score the check uses since session 24):

- real test pairs (every pair of the test films): the ROC AUC of same vs other patient;
- the score threshold, calibrated on the validation films as the check does;
- the flag rate of real unseen test films (every flag a false alarm), of a training patient's film
  queried against the training films without that film (its patient's other films stay: what a
  model that memorised the patient, not the film, would draw), of the anonymizer's films
  (`--model`, findings estimated, the first `--films` test films) and of DP-Pix's films of them.

    OMP_NUM_THREADS=2 python benchmarks/memorization_score_rule.py --data runs/demo/federation \\
        --judges runs/s24/f160/judges --model runs/s24/demo/anonymizer \\
        --json benchmarks/results/memorization_score_rule.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from measure import load_average, write_report
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from privdiff_core.anonymizer import Anonymizer, Conditions
from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.evaluation.attackers import AttackerSettings, build_verifier
from privdiff_core.evaluation.baselines.dp_pix import dp_pix
from privdiff_core.evaluation.linkage import MEMORIZATION_FPR, head_matrix
from privdiff_core.verification import embed_all

READINGS = {"whole head": False, "closeness": True}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="federation folder (privdiff synth)")
    parser.add_argument("--judges", type=Path, required=True, help="an evaluation's judges/ folder")
    parser.add_argument("--model", type=Path, required=True, help="anonymizer folder")
    parser.add_argument("--config", default="demo", help="config whose evaluate.verifier built the judges")
    parser.add_argument("--films", type=int, default=160, help="test films anonymized (first N)")
    parser.add_argument(
        "--queries", type=int, default=200, help="training films queried as a patient's other film"
    )
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    size = int(cfg.image_size)
    split = {
        name: open_dataset(args.data, size, split=name, progress=False).load_tensors(progress=False)
        for name in ("train", "val", "test")
    }
    train, val, test = split["train"], split["val"], split["test"]
    films = test.images[: args.films]
    conditions = Conditions.from_samples(test, findings_told=False).index(slice(0, args.films))
    with torch.no_grad():
        anonymized = Anonymizer.load(args.model).anonymize(films, conditions, seed=list(range(len(films))))
    b = cfg.baselines.dp_pix
    pixelated = dp_pix(films, int(b.b), float(b.m), float(b.eps), seed=0)
    ids = np.array([str(p) for p in test.patient_ids])
    same = ids[:, None] == ids[None, :]
    upper = np.triu_indices(len(ids), 1)
    queries = np.linspace(0, len(train) - 1, min(args.queries, len(train))).astype(int)
    load_before = load_average()
    rows = []
    for judge in sorted(p for p in args.judges.glob("run_*") if (p / "verifier.safetensors").is_file()):
        verifier = build_verifier(AttackerSettings.from_config(cfg.evaluate.verifier))
        verifier.load_state_dict(load_file(judge / "verifier.safetensors"))
        verifier.eval()
        emb = {
            name: embed_all(verifier, images)
            for name, images in (
                ("train", train.images),
                ("val", val.images),
                ("test", test.images),
                ("anonymized", anonymized),
                ("dp_pix", pixelated),
            )
        }
        weights = verifier.head.weight.detach().ravel()
        for reading, closeness in READINGS.items():

            def best(name: str, verifier=verifier, emb=emb, closeness: bool = closeness) -> np.ndarray:
                matrix = head_matrix(verifier, emb[name], emb["train"], "cpu", closeness=closeness)
                return matrix.max(1).values.numpy()

            threshold = float(np.quantile(best("val"), 1.0 - MEMORIZATION_FPR / 2))
            pair_scores = head_matrix(verifier, emb["test"], emb["test"], "cpu", closeness=closeness).numpy()
            other = head_matrix(verifier, emb["train"][queries], emb["train"], "cpu", closeness=closeness)
            other[torch.arange(len(queries)), torch.as_tensor(queries)] = -1.0  # not the film itself
            rows.append(
                {
                    "judge": judge.name,
                    "reading": reading,
                    "positive_weights": int((weights > 0).sum()),
                    "weights": int(weights.numel()),
                    "test_pair_auc": float(roc_auc_score(same[upper], pair_scores[upper])),
                    "threshold": threshold,
                    "unseen_real_rate": float((best("test") > threshold).mean()),
                    "training_patient_other_film_rate": float(
                        (other.max(1).values.numpy() > threshold).mean()
                    ),
                    "anonymized_rate": float((best("anonymized") > threshold).mean()),
                    "dp_pix_rate": float((best("dp_pix") > threshold).mean()),
                }
            )
            print(rows[-1], flush=True)
    out = {
        "command": " ".join(["python", "benchmarks/memorization_score_rule.py", *argv]),
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
        "fpr": MEMORIZATION_FPR,
        "films": len(films),
        "queries": len(queries),
        "rows": rows,
    }
    lines = [
        f"Score rule of the memorization check, {len(films)} test films, {len(queries)} training films "
        f"queried; threshold: the best score that {MEMORIZATION_FPR / 2:.1%} of the validation films exceed.",
        "",
        "| judge | reading | positive weights | real test-pair AUC | threshold | real unseen films | "
        "a training patient's other film | anonymized | DP-Pix |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["judge"],
            r["reading"],
            f"{r['positive_weights']} / {r['weights']}",
            f"{r['test_pair_auc']:.3f}",
            f"{r['threshold']:.4f}",
            *(f"{r[k]:.1%}" for k in ("unseen_real_rate", "training_patient_other_film_rate")),
            *(f"{r[k]:.1%}" for k in ("anonymized_rate", "dp_pix_rate")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    write_report(args.json, out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
