"""Do the synthetic films carry chest biometrics? Re-identification, age and sex attacks on real images.

    python benchmarks/biometrics.py                 # demo scale: 3 sites x 200 patients x 4 films, 64x64
    python benchmarks/biometrics.py --data DIR      # an existing federation folder instead

Writes the demo federation with `privdiff synth`'s code, reads it back from the DICOM files with
`privdiff_core.data.open_dataset` (the in-memory generator only if the readers are missing), then:

1. trains the paper's attacker, a Siamese patient verifier (`privdiff_core.verification`), on the
   train-split patients and reports ROC AUC on balanced pairs of held-out test patients, pooled
   and with negatives drawn within each site (so the scanner's look cannot help);
2. controls: the AUC of a trivial attacker comparing only grey-level statistics, and of the
   verifier re-trained on films with brightness and contrast normalised away;
3. trains `nets.ImageClassifier` age-group and sex attackers and reports test accuracy beside chance;
4. runs the "real images" column of `privdiff evaluate` on the same folder (`--config`, default
   demo: its `evaluate` settings and caps): the evaluation's own Siamese verifier, diagnosis judge
   and age/sex attacker trained on real training patients and scored on real test patients
   (`privdiff_core.evaluation.engine.evaluate_real`). `--skip-judges` leaves it out.

Prints a table and writes JSON (default benchmarks/results/biometrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from privdiff_core.attributes import FINDINGS, NUM_AGE_GROUPS, NUM_SEXES
from privdiff_core.synth import SynthParams, generate_arrays, generate_federation
from privdiff_core.synth.biometrics import (
    LabelledImages,
    chance_levels,
    classifier_accuracy,
    global_cue_auc,
    standardize,
    train_classifier,
    train_verifier_on,
    verification_auc,
)

DEMO = SynthParams(sites=3, patients=200, images_per_patient=4, size=64, seed=0)


def from_files(root: Path, size: int) -> LabelledImages:
    """Every split of a federation folder, decoded by the data readers (Contract 2)."""
    from privdiff_core.data import open_dataset

    parts = []
    for split in ("train", "val", "test"):
        tensors = open_dataset(root, size, split=split).load_tensors()
        ids = list(tensors.patient_ids)
        parts.append(
            LabelledImages(
                images=tensors.images.float(),
                patient_ids=ids,
                site=np.array([int(pid.split("/")[0].removeprefix("site_")) for pid in ids]),
                age_group=tensors.age_group.numpy().astype(int),
                sex=tensors.sex.numpy().astype(int),
                split=np.array([split] * len(ids)),
            )
        )
    return LabelledImages(
        images=torch.cat([p.images for p in parts]),
        patient_ids=[pid for p in parts for pid in p.patient_ids],
        site=np.concatenate([p.site for p in parts]),
        age_group=np.concatenate([p.age_group for p in parts]),
        sex=np.concatenate([p.sex for p in parts]),
        split=np.concatenate([p.split for p in parts]),
    )


def from_memory(params: SynthParams) -> LabelledImages:
    arrays = generate_arrays(params, progress=True)
    return LabelledImages(
        images=torch.from_numpy(arrays.images[:, None] * 2 - 1),
        patient_ids=arrays.patient_ids,
        site=arrays.site,
        age_group=arrays.age_group,
        sex=arrays.sex,
        split=arrays.split,
    )


def load(args: argparse.Namespace, scratch: Path) -> tuple[LabelledImages, str, Path | None]:
    """The films, where they came from, and the federation folder (None when held only in memory)."""
    try:
        import privdiff_core.data  # noqa: F401
    except ImportError:
        return from_memory(DEMO), "in-memory generator (privdiff_core.data not installed)", None
    if args.data is not None:
        source = f"DICOM files of {args.data} via privdiff_core.data.open_dataset"
        return from_files(args.data, args.size), source, args.data
    root = scratch / "federation"
    generate_federation(root, DEMO, progress=True)
    source = "DICOM files written by privdiff synth, read by open_dataset"
    return from_files(root, args.size), source, root


def evaluation_real_column(root: Path, config: str, threads_progress: bool) -> dict:
    """`privdiff evaluate`'s real-image measurements (re-ID AUC, diagnosis AUCs, age/sex vs chance)."""
    from privdiff_core.config import load_config
    from privdiff_core.evaluation.engine import EvaluationSettings, build_context, evaluate_real
    from privdiff_core.evaluation.pipeline import load_splits

    cfg = load_config(config)
    splits = load_splits(cfg, root, progress=False)
    settings = EvaluationSettings.from_config(cfg, progress=threads_progress)
    real = evaluate_real(build_context(splits, settings, cache_dir=None))
    run = asdict(real.runs[0])
    return {
        "config": config,
        "splits": splits.summary(),
        "reid_auc": run["reid"],
        "diagnosis_mean_auc": run["diagnosis"]["mean_auc"],
        "diagnosis_per_finding_auc": run["diagnosis"]["per_finding"],
        "diagnosis_skipped": run["diagnosis"]["skipped"],
        "test_positives": {
            name: int(v) for name, v in zip(FINDINGS, splits.test.labels.sum(0).tolist(), strict=True)
        },
        "age": run["demographics"]["age"],
        "sex": run["demographics"]["sex"],
        "judge_training": run["judge_training"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="federation folder (default: write the demo one)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500, help="verifier training steps")
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=4000, help="test pairs per AUC")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/biometrics.json"))
    parser.add_argument("--config", default="demo", help="config whose `evaluate` section the judges use")
    parser.add_argument(
        "--skip-judges", action="store_true", help="leave out privdiff evaluate's real column"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="biometrics_") as scratch:
        report = measure(args, Path(scratch), start)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


def measure(args: argparse.Namespace, scratch: Path, start: float) -> dict:
    data, source, root = load(args, scratch)
    train, test = data.select(data.split == "train"), data.select(data.split == "test")
    print(f"data: {source}; {len(train.patient_ids)} train / {len(test.patient_ids)} test films")

    timings = {}
    t = time.perf_counter()
    verifier = train_verifier_on(train, args.steps, args.seed, progress=True)
    timings["verifier_s"] = round(time.perf_counter() - t, 1)
    auc = verification_auc(verifier, test, args.pairs, args.seed + 1)
    auc_site = verification_auc(verifier, test, args.pairs, args.seed + 2, within_site=True)
    trivial = global_cue_auc(test, args.pairs, args.seed + 3)

    t = time.perf_counter()
    std_train = LabelledImages(
        standardize(train.images), train.patient_ids, train.site, train.age_group, train.sex, train.split
    )
    std_test = LabelledImages(
        standardize(test.images), test.patient_ids, test.site, test.age_group, test.sex, test.split
    )
    auc_std = verification_auc(
        train_verifier_on(std_train, args.steps, args.seed, progress=True),
        std_test,
        args.pairs,
        args.seed + 1,
    )
    timings["standardized_verifier_s"] = round(time.perf_counter() - t, 1)

    attributes = {}
    for name, targets_train, targets_test, classes in (
        ("age_group", train.age_group, test.age_group, NUM_AGE_GROUPS),
        ("sex", train.sex, test.sex, NUM_SEXES),
    ):
        t = time.perf_counter()
        model = train_classifier(
            train.images, targets_train, classes, args.classifier_steps, args.seed, progress=True
        )
        accuracy, balanced = classifier_accuracy(model, test.images, targets_test)
        majority, balanced_chance = chance_levels(targets_test, classes)
        attributes[name] = {
            "accuracy": round(accuracy, 4),
            "majority_chance": round(majority, 4),
            "balanced_accuracy": round(balanced, 4),
            "balanced_chance": round(balanced_chance, 4),
        }
        timings[f"{name}_s"] = round(time.perf_counter() - t, 1)

    report = {
        "data": source,
        "scale": {
            "sites": DEMO.sites,
            "patients_per_site": DEMO.patients,
            "images_per_patient": DEMO.images_per_patient,
            "size": args.size,
        },
        "train_films": len(train.patient_ids),
        "test_films": len(test.patient_ids),
        "test_patients": len(set(test.patient_ids)),
        "verifier_steps": args.steps,
        "verification_auc": round(auc, 4),
        "verification_auc_within_site": round(auc_site, 4),
        "grey_statistics_auc": round(trivial, 4),
        "verification_auc_standardized_films": round(auc_std, 4),
        "attributes": attributes,
        "threads": args.threads,
        "seconds": {**timings, "total": round(time.perf_counter() - start, 1)},
    }
    rows = [
        ("patient verification AUC (test patients, pooled)", auc, 0.5),
        ("  ... negatives within the same site", auc_site, 0.5),
        ("  control: grey-level statistics only", trivial, 0.5),
        ("  control: verifier on brightness/contrast-normalised films", auc_std, 0.5),
        (
            "age group accuracy (4 groups)",
            attributes["age_group"]["accuracy"],
            attributes["age_group"]["majority_chance"],
        ),
        (
            "  balanced accuracy",
            attributes["age_group"]["balanced_accuracy"],
            attributes["age_group"]["balanced_chance"],
        ),
        ("sex accuracy", attributes["sex"]["accuracy"], attributes["sex"]["majority_chance"]),
        ("  balanced accuracy", attributes["sex"]["balanced_accuracy"], attributes["sex"]["balanced_chance"]),
    ]
    print(f"\n{'measure':<62} {'value':>7} {'chance':>7}")
    for label, value, chance in rows:
        print(f"{label:<62} {value:>7.3f} {chance:>7.3f}")
    if root is not None and not args.skip_judges:
        t = time.perf_counter()
        judged = evaluation_real_column(root, args.config, threads_progress=True)
        report["evaluate_real"] = judged
        report["seconds"]["evaluate_real_s"] = round(time.perf_counter() - t, 1)
        print(f"\nprivdiff evaluate, real test images ({args.config} config, {judged['splits']['test']})")
        reid = judged["reid_auc"]
        print(
            f"  re-identification AUC {reid['auc']:.3f} (95% CI {reid['ci_low']:.3f}-{reid['ci_high']:.3f})"
        )
        print(f"  diagnosis mean AUC {judged['diagnosis_mean_auc']:.3f} over the findings present in test:")
        for name, auc in judged["diagnosis_per_finding_auc"].items():
            shown = "skipped" if auc is None else f"{auc:.3f}"
            print(f"    {name:<20} {shown:>7}  ({judged['test_positives'][name]} positive test films)")
        for name in ("age", "sex"):
            part = judged[name]
            print(f"  {name} accuracy {part['accuracy']:.3f} (chance, majority class: {part['chance']:.3f})")
    report["seconds"]["total"] = round(time.perf_counter() - start, 1)
    print(f"\n(total {report['seconds']['total']:.0f} s on {args.threads} thread(s))")
    return report


if __name__ == "__main__":
    main()
