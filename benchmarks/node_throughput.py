"""The DICOM node end to end (receive -> release -> forward) against the folder release, same files.

    python benchmarks/node_throughput.py --config tiny --images 32 --threads 1
    python benchmarks/node_throughput.py --model runs/demo/anonymizer --images 64 --quiet-time 5

Inputs: copies of the RSNA fixture (JPEG Baseline CR), each its own study (as in
`release_throughput.py`). Two variants, in one run, alternating:

- `folder release`: `run_release` on the folder, timed from the call to its return (signature
  check, model load, readers, anonymizer, risk check, writes, audit): what `privdiff-client
  release` costs a user for these files; `folder release, model loaded`: the same run's own
  figure, from its first image to its last (as `release_throughput.py` reports it);
- `node`: a real `privdiff-client serve` process and DCMTK's storescp as the archive; timed from
  the moment DCMTK's storescu starts sending the files to the moment the archive holds all of them
  (C-STORE in, fsync'ed spool + queue, quiet time, release in the node's release process, C-STORE
  out). The node's start-up is not timed (it runs for months): the files are sent `--warm-up`
  seconds after it listens, once its release process has imported torch.

The node pays the quiet time once per burst, and a model load and reader start per release batch;
the JSON shows how many batches the node made. Times on a shared machine drift: each variant runs
`--repeats` times, the best is kept, the machine's load average is recorded; compare the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "client" / "node"))  # the tests' real DICOM peers

from dicom_net import Processes, free_port, port_open, storescp_command, storescu, wait_for  # noqa: E402

from benchmarks.release_throughput import make_inputs, model_folder, release_once  # noqa: E402

SECRET = b"benchmark site secret, not real!"


def folder_release(model: Path, inputs: Path, workdir: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Instances per second of `run_release` from its call to its return, and of its pipeline alone."""
    started = time.perf_counter()
    pipeline = release_once(model, inputs, workdir, args, risk=True)
    return args.images / (time.perf_counter() - started), pipeline


def node_run(model: Path, files: list[Path], workdir: Path, args: argparse.Namespace) -> tuple[float, int]:
    """Instances per second through a fresh node, and how many release batches it made."""
    run = Path(tempfile.mkdtemp(dir=workdir, prefix="node-"))
    port, archive_port = free_port(), free_port()
    command = [sys.executable, "-m", "privdiff.client.cli", "serve", "--node-dir", str(run / "node")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--allow-ae", "PACS"]
    command += ["--destination", f"ARCHIVE@127.0.0.1:{archive_port}", "--quiet-time", str(args.quiet_time)]
    command += ["--model", str(model), "--allow-unsigned", "--site-secret", str(workdir / "secret")]
    command += ["--own-verifier", "--quarantine-threshold", "1.0", "--batch-size", str(args.batch_size)]
    command += ["--workers", str(args.workers), "--device", args.device]
    command += ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    processes = Processes(run / "logs")
    try:
        processes.start("archive", storescp_command(archive_port, run / "archive"), env, cwd=ROOT)
        node = processes.start("node", command, env, cwd=ROOT)
        wait_for(lambda: port_open(port) and port_open(archive_port), 300, "the node and the archive", 0.2)
        time.sleep(args.warm_up)  # the node's release process imports torch once, at its start
        started = time.perf_counter()
        sent = storescu(files, port, "PACS")
        if sent.returncode != 0:
            raise RuntimeError(f"storescu failed: {sent.stderr[-500:]}")
        archive = run / "archive"
        wait_for(
            lambda: len(list(archive.iterdir())) >= len(files), 3600, "the archive to get everything", 0.1
        )
        seconds = time.perf_counter() - started
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=120)
        db = sqlite3.connect(run / "node" / "release" / "audit.sqlite")
        try:
            batches = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    finally:
        processes.stop_all()
    shutil.rmtree(run, ignore_errors=True)
    return len(files) / seconds, batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="anonymizer folder (default: an untrained model of --config)")
    parser.add_argument("--config", default="tiny", help="config of the untrained model (default tiny)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="release reader processes")
    parser.add_argument("--quiet-time", type=float, default=2.0, help="the node's --quiet-time (default 2 s)")
    parser.add_argument(
        "--warm-up",
        type=float,
        default=20.0,
        help="seconds the started node gets before the files (default 20)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/node_throughput.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    results: dict[str, list[float]] = {"folder release": [], "folder release, model loaded": [], "node": []}
    batches = []
    with tempfile.TemporaryDirectory(prefix="privdiff-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "secret").write_bytes(SECRET)
        inputs = workdir / "in"
        files = make_inputs(inputs, args.images)
        model = model_folder(args, workdir)
        for _ in range(args.repeats):
            whole, pipeline = folder_release(model, inputs, workdir, args)
            results["folder release"].append(whole)
            results["folder release, model loaded"].append(pipeline)
            per_second, made = node_run(model, files, workdir, args)
            results["node"].append(per_second)
            batches.append(made)

    best = {name: max(values) for name, values in results.items()}
    baseline = best["folder release"]
    rows = [
        {
            "variant": name,
            "instances_per_s": round(v, 3),
            "ratio": round(v / baseline, 3),
            "runs": results[name],
        }
        for name, v in best.items()
    ]
    print(f"{'variant':<32}{'instances/s':>12}{'vs folder':>11}")
    for row in rows:
        print(f"{row['variant']:<32}{row['instances_per_s']:>12.2f}{row['ratio']:>10.0%}")
    record = {
        "benchmark": "node_throughput",
        "model": args.model or f"untrained {args.config}",
        "images": args.images,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "quiet_time_s": args.quiet_time,
        "warm_up_s": args.warm_up,
        "node_release_batches": batches,
        "device": args.device,
        "torch_threads": args.threads,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
