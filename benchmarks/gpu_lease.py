"""One short GPU lease in one call: the paper config's speed and a few hundred of its training
steps, and the demo anonymizer's denoiser trained longer than the 2-core budget allows.

    python benchmarks/gpu_lease.py --data runs/demo/federation --out OUT        # on the GPU
    python benchmarks/gpu_lease.py --dry-run --out /tmp/lease                    # CPU, tiny, ~2 min

Three parts; the first two side by side, the elastic third alone with what is left of --seconds:
1. demo denoiser length (issue 10): `privdiff train --config demo` on the demo federation (pooled),
   with the SSIM autoencoder (vae.ssim_weight=0.5, train.autoencoder.encoder_every=3) and each of
   --denoiser-steps denoiser steps (default 2000, the demo's, and 6000), one process each. Every
   run's anonymizer goes into one tar, cut in parts of 15 MiB (the device tool brings back files of
   at most 16 MiB), to be evaluated on the CPU against the same judges as the default's frontier:
       cat OUT/models.tar.part* | tar -x -C DIR
2. the paper config end to end on small data: `privdiff synth` 3 sites x --paper-patients patients
   at 256 px, then `privdiff train --config paper` for --paper-steps steps per stage (loss, val loss,
   seconds). Its timings share the GPU with part 1: the speed figures are part 3's.
3. benchmarks/gpu_benchmark.py: anonymize throughput, training speed and memory of the paper
   config, alone on the GPU.
Writes OUT/gpu_lease.json (each command, its seconds, exit status and final losses),
OUT/gpu_benchmark.json and OUT/logs.tar.gz (every command's log, each run's metrics.json).
Runs from a checkout (no install of privdiff needed: measure.import_checkout), on the machine's
own torch; --dry-run does every part on the CPU with the tiny config and a few steps.

On a GPU machine without network (2026-12-05: torch 2.11 there, none of these) carry the wheels
privdiff imports and install them beside the machine's packages, e.g.
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
        diffusers==0.42.1 omegaconf==2.4.0 pydicom==3.0.2 cryptography==50.0.2 cffi==2.1.1 \
        pycparser==3.12 importlib_metadata==10.2.0 pytorch-msssim==1.0.0 monai==1.6.1
    (there) pip install --no-index --no-deps --target /tmp/site .whl/*.whl; PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import import_checkout, write_report

ROOT = Path(__file__).resolve().parents[1]
PART_BYTES = 15 * 2**20
SSIM_AUTOENCODER = ["vae.ssim_weight=0.5", "train.autoencoder.encoder_every=3"]


def privdiff(*args: str) -> list[str]:
    """A `privdiff` command run from this checkout's sources (the entry point need not be installed)."""
    return [sys.executable, "-m", "privdiff_core.cli", *args]


class Job:
    """One command in the background, its output in a log file."""

    def __init__(self, name: str, command: list[str], logs: Path, env: dict[str, str]) -> None:
        self.name, self.command, self.log = name, command, logs / f"{name}.log"
        self.started = time.perf_counter()
        self.handle = self.log.open("w")
        self.process = subprocess.Popen(command, stdout=self.handle, stderr=subprocess.STDOUT, env=env)

    def wait(self, deadline: float) -> dict[str, Any]:
        """Wait until the job ends or the deadline (perf_counter seconds) passes; then it is killed."""
        try:
            code = self.process.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
            print(f"  {self.name}: stopped at the deadline", flush=True)
        self.handle.close()
        seconds = time.perf_counter() - self.started
        print(f"  {self.name}: exit {code} after {seconds:.0f} s", flush=True)
        if code != 0:  # the reason, where only the end of the output comes back
            print("".join(self.log.read_text(errors="replace").splitlines(True)[-15:]), flush=True)
        return {"command": " ".join(self.command), "exit_code": code, "seconds": round(seconds, 1)}


def training_summary(run: Path) -> dict[str, Any]:
    """Final loss, val loss and the val curve of each stage, from the run's metrics.json."""
    metrics = run / "metrics.json"
    if not metrics.exists():
        return {"finished": False}
    stages = json.loads(metrics.read_text())["stages"]
    return {
        "finished": (run / "anonymizer").is_dir(),
        "stages": {
            name: {
                key: stage[key]
                for key in ("loss_last", "recon_last", "ssim_last", "val_loss", "val_history", "steps")
                if key in stage
            }
            for name, stage in stages.items()
        },
    }


def pack_models(runs: dict[str, Path], out: Path, work: Path) -> list[str]:
    """Every finished run's anonymizer/, config.yaml and metrics.json in one tar, cut in parts."""
    tar_path = work / "models.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, run in runs.items():
            if (run / "anonymizer").is_dir():
                for item in ("anonymizer", "config.yaml", "metrics.json"):
                    if (run / item).exists():
                        tar.add(run / item, arcname=f"{name}/{item}")
    parts = []
    with tar_path.open("rb") as whole:
        while chunk := whole.read(PART_BYTES):
            part = out / f"models.tar.part{len(parts):02d}"
            part.write_bytes(chunk)
            parts.append(part.name)
    tar_path.unlink()
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="the demo federation folder (part 1; skipped without it)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument(
        "--denoiser-steps", default="2000,6000", help="part 1's denoiser lengths, comma-separated"
    )
    parser.add_argument("--paper-patients", type=int, default=40, help="patients per site of part 2's data")
    parser.add_argument("--paper-steps", type=int, default=300, help="part 2's training steps per stage")
    parser.add_argument("--seconds", type=float, default=520.0, help="the whole run's time")
    parser.add_argument(
        "--train-seconds", type=float, default=330.0, help="parts 1 and 2 are stopped after this"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny config, a few steps")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        lengths = [int(n) for n in args.denoiser_steps.split(",")]
    except ValueError:
        parser.error("--denoiser-steps takes comma-separated integers, e.g. 2000,6000")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_lease: no CUDA GPU visible; run it on a GPU machine, or pass --dry-run", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    demo, paper = ("tiny", "tiny") if args.dry_run else ("demo", "paper")
    if args.dry_run:
        lengths = [10 * (i + 1) for i in range(len(lengths))]
    paper_steps = 10 if args.dry_run else args.paper_steps

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-lease-"))
    logs = work / "logs"
    logs.mkdir()
    import_checkout(ROOT)  # no install of privdiff needed: the commands below run from the checkout
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1" if args.dry_run else "4"
    report: dict[str, Any] = {"benchmark": "gpu_lease", "dry_run": args.dry_run, "device": device}
    if device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    report["torch"] = torch.__version__

    data = args.data
    if args.dry_run and data is None:  # the tiny federation stands in for the demo one
        data = work / "demo-data"
        subprocess.run(privdiff("synth", "--config", "tiny", "--out", str(data)), check=True, env=env)
    deadline = started + args.train_seconds
    print(f"== parts 1 and 2 (stopped after {args.train_seconds:.0f} s)", flush=True)
    lengths = lengths if data else []  # part 1 needs the demo federation
    runs = {f"ssim_denoiser{n}": work / f"ssim_denoiser{n}" for n in lengths}
    jobs = [
        Job(
            name,
            privdiff(
                "train",
                "--config",
                demo,
                "--no-progress",
                f"data={data}",
                f"out={run}",
                f"device={device}",
                *SSIM_AUTOENCODER,
                f"train.denoiser.steps={n}",
                *(["train.autoencoder.steps=10"] if args.dry_run else []),
            ),
            logs,
            env,
        )
        for (name, run), n in zip(runs.items(), lengths, strict=True)
    ]
    paper_data, paper_run = work / "paper-data", work / "paper-run"
    synth = Job(
        "paper_synth",
        privdiff(
            "synth",
            "--config",
            paper,
            "--out",
            str(paper_data),
            "--patients",
            str(args.paper_patients),
            "--size",
            "64" if args.dry_run else "256",
            "--workers",
            "1" if args.dry_run else "4",
        ),
        logs,
        env,
    )
    report["paper_synth"] = synth.wait(deadline)
    paper_train = Job(
        "paper_train",
        privdiff(
            "train",
            "--config",
            paper,
            "--no-progress",
            f"data={paper_data}",
            f"out={paper_run}",
            f"device={device}",
            f"train.autoencoder.steps={paper_steps}",
            f"train.denoiser.steps={paper_steps}",
            f"train.val_every={max(paper_steps // 3, 1)}",
            "train.checkpoint_every=100000",
            "train.latent_stats_images=256",
        ),
        logs,
        env,
    )
    report["paper_train"] = paper_train.wait(deadline) | training_summary(paper_run)
    report["demo_denoiser_length"] = {
        name: job.wait(deadline) | training_summary(runs[name]) for name, job in zip(runs, jobs, strict=True)
    }
    report["model_parts"] = pack_models(runs, args.out, work)
    write_report(args.out / "gpu_lease.json", report)

    budget = max(30.0, args.seconds - (time.perf_counter() - started) - 60.0)
    print(f"== part 3: gpu_benchmark (budget {budget:.0f} s)", flush=True)
    bench = Job(
        "gpu_benchmark",
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_benchmark.py"),
            "--sections",
            "anonymize,training",
            "--budget-s",
            f"{budget:.0f}",
            "--out",
            str(args.out / "gpu_benchmark.json"),
            *(["--dry-run"] if args.dry_run else []),
        ],
        logs,
        env,
    )
    report["gpu_benchmark"] = bench.wait(started + args.seconds + 30.0)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(args.out / "gpu_lease.json", report)

    with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
        for name, run in {**runs, "paper_train": paper_run}.items():
            for item in ("metrics.json", "config.yaml"):
                if (run / item).exists():
                    tar.add(run / item, arcname=f"{name}/{item}")
    print(json.dumps({k: v for k, v in report.items() if k != "model_parts"}, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
