"""Are the films the memorization check flags copies of training films, or only scored like them?

`privdiff evaluate` calls an anonymized test film memorized when the real-trained verifier scores
it against some training film above the threshold that 1% of real unseen films cross (or lies
nearer to one in its embedding). That is a statement about the verifier. This script adds the
pixels: for each anonymizer (`--model NAME=FOLDER`, findings estimated, age and sex told, the
config's mode) and each judge run of an evaluation folder (`--judges OUT/judges`, the verifiers
`privdiff evaluate` trained), it anonymizes the first `--films` test films, flags them as the
evaluation does (and by which rule: the score, the embedding distance), and measures each film's
pixel SSIM to its nearest training film. Beside it, as the scale: real test films against the
training films (other patients: what "not a copy" looks like) and against their own patient's
other test films (what the same anatomy looks like).

    OMP_NUM_THREADS=1 python benchmarks/memorization_copies.py --data runs/demo/federation \\
        --judges runs/frontier/judges --model federated=runs/demo/anonymizer \\
        --json benchmarks/results/memorization_copies.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from measure import load_average, write_report
from safetensors.torch import load_file

from privdiff_core.anonymizer import Anonymizer, Conditions
from privdiff_core.config import load_config
from privdiff_core.data import open_dataset
from privdiff_core.evaluation.attackers import AttackerSettings, build_verifier
from privdiff_core.evaluation.cli_evaluate import parse_models
from privdiff_core.evaluation.linkage import (
    MEMORIZATION_FPR,
    memorization_flags,
    memorization_rules,
    memorization_threshold,
)
from privdiff_core.evaluation.quality import ssim_per_image


def nearest_ssim(films: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """Per film: the pixel SSIM of the gallery film most like it."""
    return np.array([ssim_per_image(f[None].expand(len(gallery), -1, -1, -1), gallery).max() for f in films])


def same_patient_ssim(images: torch.Tensor, patient_ids: list[str]) -> np.ndarray:
    """Pixel SSIM of every pair of one patient's films (the same anatomy, another exposure)."""
    by_patient: dict[str, list[int]] = {}
    for i, pid in enumerate(patient_ids):
        by_patient.setdefault(pid, []).append(i)
    pairs = [(a, b) for idx in by_patient.values() for k, a in enumerate(idx) for b in idx[k + 1 :]]
    if not pairs:  # no patient with two films among them
        return np.array([])
    first, second = zip(*pairs, strict=True)
    return ssim_per_image(images[list(first)], images[list(second)])


def summary(values: np.ndarray) -> dict[str, float | int]:
    if len(values) == 0:
        return {"films": 0}
    return {"films": len(values), "mean": float(values.mean()), "max": float(values.max())}


def described(values: dict[str, float | int]) -> str:
    """'mean (max ...)', or '-' where there was nothing to measure."""
    return f"{values['mean']:.3f} (max {values['max']:.3f})" if values["films"] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="federation folder (privdiff synth)")
    parser.add_argument(
        "--judges", type=Path, required=True, help="an evaluation's judges/ folder (run_<r>/)"
    )
    parser.add_argument("--model", action="append", required=True, help="NAME=FOLDER, repeatable")
    parser.add_argument("--config", default="demo", help="config whose evaluate.verifier built the judges")
    parser.add_argument("--films", type=int, default=160, help="test films anonymized per run (first N)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/memorization_copies.json"))
    args = parser.parse_args()
    if args.films < 1:
        parser.error(f"--films must be at least 1, got {args.films}")
    cfg = load_config(args.config)
    size = int(cfg.image_size)
    split = {
        name: open_dataset(args.data, size, split=name, progress=False).load_tensors(progress=False)
        for name in ("train", "val", "test")
    }
    train, test = split["train"].images, split["test"]
    films = test.images[: args.films]
    conditions = Conditions.from_samples(test, findings_told=False).index(slice(0, args.films))
    runs = sorted(p for p in args.judges.glob("run_*") if (p / "verifier.safetensors").is_file())
    if not runs:
        parser.error(f"no run_<r>/verifier.safetensors under {args.judges}")
    started = time.perf_counter()
    reference = {
        "other_patients_nearest": summary(nearest_ssim(films, train)),
        "same_patient_pairs": summary(
            same_patient_ssim(films, [str(p) for p in test.patient_ids[: args.films]])
        ),
    }
    print(
        f"real test films: nearest training film SSIM {described(reference['other_patients_nearest'])}, "
        f"same patient {described(reference['same_patient_pairs'])}",
        flush=True,
    )
    # Each judge's verifier and threshold depend on the real films only: once for every model.
    verifiers = []
    for judge in runs:
        verifier = build_verifier(AttackerSettings.from_config(cfg.evaluate.verifier))
        verifier.load_state_dict(load_file(judge / "verifier.safetensors"))
        verifier.eval()
        threshold = memorization_threshold(verifier, split["val"].images, train, MEMORIZATION_FPR)
        verifiers.append((judge, verifier, threshold))
    rows = []
    for name, folder in parse_models(args.model):
        anonymizer = Anonymizer.load(folder)
        for run, (judge, verifier, threshold) in enumerate(verifiers):
            seeds = [run * 100_000 + i for i in range(len(films))]
            with torch.no_grad():
                outputs = anonymizer.anonymize(films, conditions, seed=seeds)
                flagged, best, nearest = memorization_flags(verifier, outputs, train, threshold)
            pixels = nearest_ssim(outputs, train)
            by_score, by_distance = memorization_rules(best, nearest, threshold)  # a film can cross both
            rows.append(
                {
                    "model": name,
                    "judge": judge.name,
                    "flagged_rate": float(flagged.mean()),
                    "by_score_rate": float(by_score.mean()),
                    "by_distance_rate": float(by_distance.mean()),
                    "score_median": float(np.median(best)),
                    "score_threshold": threshold["score"],
                    "nearest_ssim_flagged": summary(pixels[flagged]),
                    "nearest_ssim_all": summary(pixels),
                }
            )
            print(
                f"{name} {judge.name}: flagged {flagged.mean():.1%}, score median {np.median(best):.3f} "
                f"(threshold {threshold['score']:.3f}), nearest-film SSIM flagged "
                f"{described(rows[-1]['nearest_ssim_flagged'])} / all {pixels.mean():.3f}",
                flush=True,
            )
    lines = [
        "| model | judge | flagged | by score / by distance | verifier score median (threshold) "
        "| nearest training film SSIM, flagged (max) | all films |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['judge']} | {r['flagged_rate']:.1%} "
            f"| {r['by_score_rate']:.1%} / {r['by_distance_rate']:.1%} | {r['score_median']:.3f} "
            f"({r['score_threshold']:.3f}) | {described(r['nearest_ssim_flagged'])} "
            f"| {r['nearest_ssim_all']['mean']:.3f} |"
        )
    lines.append(
        f"\nReal test films: nearest training film SSIM {described(reference['other_patients_nearest'])}; "
        f"the same patient's other films {described(reference['same_patient_pairs'])}."
    )
    payload = {
        "command": "python benchmarks/memorization_copies.py "
        + " ".join(
            [
                f"--data {args.data}",
                f"--judges {args.judges}",
                *(f"--model {m}" for m in args.model),
                f"--config {args.config}",
                f"--films {args.films}",
            ]
        ),
        "memorization_fpr": MEMORIZATION_FPR,
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "seconds": time.perf_counter() - started,
        "real_reference": reference,
        "rows": rows,
    }
    write_report(args.json, payload, "\n".join(lines))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
