"""How much fine detail (ribs, lung markings, edges) the films keep, not just their layout.

SSIM and the Frechet distance barely move when a film is blurred evenly; the mean absolute
Laplacian (privdiff_core.evaluation.quality.fine_detail: the image's high-frequency energy, the
report's "Fine detail" column) falls with every bit of blur. For each anonymizer
(`--model NAME=FOLDER`), on the first `--images` test films of a federation folder:
    real          the test films themselves
    vae           the model's autoencoder alone (encode, decode): the most any output can keep
    estimated     generative outputs, age and sex told, findings estimated (the default release)
    told          generative outputs, findings told as well (a site with the reports)
each as the mean |Laplacian| and as a share of the real films' (`share`), with the VAE's SSIM.

    OMP_NUM_THREADS=1 python benchmarks/fine_detail.py --data runs/demo/federation \\
        --model federated=runs/demo/anonymizer --model central=runs/central/anonymizer \\
        --json benchmarks/results/fine_detail_demo.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from measure import load_average, write_report

from privdiff_core.anonymizer import Anonymizer, Conditions
from privdiff_core.data import CXRTensors, open_dataset
from privdiff_core.evaluation.cli_evaluate import parse_models
from privdiff_core.evaluation.quality import fine_detail, ssim_per_image


def measure_model(anonymizer: Anonymizer, test: CXRTensors, films: int, seed: int) -> dict[str, float]:
    images = test.images[:films]
    first = slice(0, films)
    sensitive = Conditions.from_samples(test, findings_told=False).index(first)
    told = Conditions.from_samples(test).index(first)
    reconstructed = anonymizer.models.reconstruct(images)
    outputs = {
        "vae": reconstructed,
        "estimated": anonymizer.anonymize(images, sensitive, seed, mode="generative"),
        "told": anonymizer.anonymize(images, told, seed, mode="generative"),
    }
    real = float(fine_detail(images).mean())
    row = {"real": real, "vae_ssim": float(ssim_per_image(images, reconstructed).mean())}
    for name, films_out in outputs.items():
        row[name] = float(fine_detail(films_out).mean())
        row[f"{name}_share"] = row[name] / real
    return row


def markdown(report: dict) -> str:
    lines = [
        "# Fine detail the films keep (mean |Laplacian|, share of the real films')",
        "",
        f"`{report['command']}`",
        "",
        f"{report['films']} test films, {report['threads']} torch thread(s), load average before / after: "
        f"{report['load_average_before']} / {report['load_average_after']}.",
        "",
        "| model | real films | VAE alone (SSIM) | generative, findings estimated "
        "| generative, findings told |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["models"].items():
        lines.append(
            f"| {name} | {row['real']:.4f} "
            f"| {row['vae']:.4f} ({row['vae_share']:.0%}; SSIM {row['vae_ssim']:.2f}) "
            f"| {row['estimated']:.4f} ({row['estimated_share']:.0%}) "
            f"| {row['told']:.4f} ({row['told_share']:.0%}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="federation folder (privdiff synth)")
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]FOLDER")
    parser.add_argument("--images", type=int, default=160, help="test films measured (first N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/fine_detail_demo.json"))
    args = parser.parse_args()
    named = parse_models(args.model)  # as `privdiff evaluate --model` reads them
    before = load_average()
    started = time.perf_counter()
    rows = {}
    for name, folder in named:
        anonymizer = Anonymizer.load(folder)
        test = open_dataset(args.data, anonymizer.image_size, split="test", progress=False).load_tensors(
            progress=False
        )
        films = min(args.images, len(test))
        rows[name] = {"folder": folder, **measure_model(anonymizer, test, films, args.seed)}
        print(
            f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items() if k != "folder"),
            flush=True,
        )
    report = {
        "command": "python benchmarks/fine_detail.py "
        + " ".join([f"--data {args.data}", *(f"--model {m}" for m in args.model), f"--images {args.images}"]),
        "films": films,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
        "load_average_before": before,
        "load_average_after": load_average(),
        "models": rows,
    }
    write_report(args.json, report, markdown(report))
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
