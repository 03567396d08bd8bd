"""How a trained anonymizer calls its estimated findings: per sex or not, Youden or prevalence.

The generative mode draws the findings its estimator calls. This script re-measures a trained
model's thresholds with the final model on each site's training films (512 per site, as a site
does at the end of a round) and averages them over the sites, three ways
(`PrivDiffModels.measure_finding_thresholds`):

    youden_pooled         one Youden-optimal row for both sexes (privdiff before 0182170)
    youden_balanced       a row per sex that calls each finding in the same share of both sexes
    prevalence_balanced   each finding called in the share of films that have it, in each sex
                          (encoder.finding_calls=prevalence: demo, paper)

writes each as an anonymizer folder under --out (manifest hashes updated, signature dropped),
then measures on the test split: the estimator's mean AUC, findings called per film, the calls'
mean Youden index J, the largest gap between the sexes in how often a finding is called, and how
well a logistic regression reads the sex from the 14 calls (5 x shuffled 5-fold cross-validation).
What the outputs then show is measured by running the frontier on the folders:

    OMP_NUM_THREADS=1 python benchmarks/finding_thresholds_per_sex.py \
        --model runs/demo/anonymizer --data runs/demo/federation --out runs/thresholds \
        --json benchmarks/results/finding_thresholds_calls.json
    OMP_NUM_THREADS=1 python benchmarks/anonymizer_frontier.py \
        --model youden_pooled=runs/thresholds/youden_pooled/anonymizer \
        --model prevalence_balanced=runs/thresholds/prevalence_balanced/anonymizer \
        --data runs/demo/federation --out runs/thresholds/eval --modes generative --methods oracle \
        --conditions sensitive [the main job's light overrides]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

from privdiff_core.anonymizer import Anonymizer
from privdiff_core.attributes import NUM_FINDINGS
from privdiff_core.data import open_dataset
from privdiff_core.signing import sha256_file

FILMS_PER_SITE = 512  # train.latent_stats_images: what a site measures its thresholds on


# variant: (encoder.finding_calls, whether the films' sex is used)
VARIANTS = {
    "youden_pooled": ("youden", False),
    "youden_balanced": ("youden", True),
    "prevalence_balanced": ("prevalence", True),
}


def site_thresholds(anonymizer: Anonymizer, data: Path, seed: int) -> dict[str, torch.Tensor]:
    """Every variant's thresholds, measured per site and averaged over the sites."""
    models, rows = anonymizer.models, {name: [] for name in VARIANTS}
    sites = sorted(p for p in data.iterdir() if p.is_dir())
    for site in sites:
        train = open_dataset(site, anonymizer.image_size, split="train", progress=False).load_tensors(
            progress=False
        )
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:FILMS_PER_SITE]
        films = (train.images[idx], train.labels[idx], train.label_mask[idx])
        unknown_sex = torch.full_like(train.sex[idx], -1)  # no sex known: the pooled row for both
        for name, (calls, by_sex) in VARIANTS.items():
            models.finding_calls = calls
            sex = train.sex[idx] if by_sex else unknown_sex
            rows[name].append(models.measure_finding_thresholds(*films, sex).clone())
    return {name: torch.stack(values).mean(dim=0) for name, values in rows.items()}


def write_variant(model: Path, thresholds: torch.Tensor, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(model, folder)
    (folder / "signature.json").unlink(missing_ok=True)  # the config changes: no longer the signed model
    config = folder / "encoder" / "config.json"
    saved = json.loads(config.read_text())
    saved["finding_thresholds"] = thresholds.tolist()
    config.write_text(json.dumps(saved, indent=2))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["encoder/config.json"] = sha256_file(config)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def call_statistics(anonymizer: Anonymizer, thresholds: torch.Tensor, data: Path) -> dict:
    test = open_dataset(data, anonymizer.image_size, split="test", progress=False)
    test = test.load_tensors(progress=False)
    with torch.no_grad():
        estimates = anonymizer.models.encoder.estimate(test.images)
    probs, truth, sex = estimates["diagnosis"].numpy(), test.labels.numpy(), test.sex.numpy()
    rows = thresholds.numpy()[estimates["sex"].argmax(dim=1).numpy()]  # the anonymizer's own choice
    called = (probs >= rows).astype(float)
    findings = [k for k in range(NUM_FINDINGS) if 0 < truth[:, k].sum() < len(truth)]
    youden = [called[truth[:, k] == 1, k].mean() - called[truth[:, k] == 0, k].mean() for k in findings]
    known = sex >= 0
    reader = LogisticRegression(max_iter=2000)
    folds = [StratifiedKFold(5, shuffle=True, random_state=r) for r in range(5)]
    accuracy = [cross_val_score(reader, called[known], sex[known], cv=cv) for cv in folds]
    return {
        "estimator_auc": float(np.mean([roc_auc_score(truth[:, k], probs[:, k]) for k in findings])),
        "mean_youden_j": float(np.mean(youden)),
        "sex_from_calls": float(np.mean(accuracy)),
        "sex_from_calls_std": float(np.std([a.mean() for a in accuracy])),
        "majority_sex": float(max(sex[known].mean(), 1 - sex[known].mean())),
        "calls_per_film": float(called.sum(axis=1).mean()),
        "findings_per_film": float(truth.sum(axis=1).mean()),
        "max_call_rate_gap": float(np.abs(called[sex == 0].mean(0) - called[sex == 1].mean(0)).max()),
        "films": int(len(test)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="trained anonymizer folder")
    parser.add_argument("--data", required=True, help="its synthetic federation (site folders)")
    parser.add_argument("--out", required=True, help="where the variants' anonymizer folders are written")
    parser.add_argument("--json", required=True, help="output JSON")
    parser.add_argument("--seed", type=int, default=0, help="which 512 training films per site")
    args = parser.parse_args(argv)
    model, data, out = Path(args.model), Path(args.data), Path(args.out)
    for path in (model, data):
        if not path.exists():
            print(f"finding_thresholds_per_sex: {path} does not exist", file=sys.stderr)
            return 2
    anonymizer = Anonymizer.load(model)
    result = {"command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(), "variants": {}}
    for name, thresholds in site_thresholds(anonymizer, data, args.seed).items():
        write_variant(model, thresholds, out / name / "anonymizer")
        result["variants"][name] = {
            "folder": str(out / name / "anonymizer"),
            **call_statistics(anonymizer, thresholds, data),
        }
        print(name, json.dumps(result["variants"][name]), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
