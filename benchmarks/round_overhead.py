"""What a federated round of the real main job costs beyond its training steps.

Runs `privdiff simulate` (the real PrivDiff-Net task, SecAgg+, 3 simulated sites) with one local
step per round, so a round is almost all overhead: the four SecAgg+ messages per site, the global
state sent and the update masked, the sites' per-round work around their one step, the server's
aggregation and checkpoint. The run is stopped once its checkpoint says every round is done (the
gate, signing and anonymizing after them are not what this measures). Round seconds come from the
checkpoint's history; the first denoiser round (no optimizer state yet) is left out of the median.

    python benchmarks/round_overhead.py --data runs/demo/federation --repeats 3 \\
        --json benchmarks/results/round_overhead.json

Run it from two checkouts (each with its own venv) to compare two versions; --label names them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import load_average, write_report

from privdiff.server.checkpoint import load_checkpoint
from privdiff_core.config import load_config

REPO = Path(__file__).resolve().parents[1]


def one_run(data: Path, work: Path, denoiser_rounds: int, config: str, timeout_s: float) -> dict:
    out = work / "run"
    command = [
        str(Path(sys.executable).parent / "privdiff"),  # this venv's command
        "simulate",
        "--config",
        config,
        "--no-evaluate",
        "--no-progress",
        f"data={data}",
        f"out={out}",
        "federation.rounds.autoencoder=1",
        "federation.local_steps.autoencoder=1",
        f"federation.rounds.denoiser={denoiser_rounds}",
        "federation.local_steps.denoiser=1",
    ]
    log = (work / "simulate.log").open("w")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline, history = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(2.0)
            if not (out / "config.yaml").is_file():  # the run has not written its config yet
                continue
            # the server writes its checkpoint atomically (tmp + rename): never read half-written
            state = load_checkpoint(out, load_config(str(out / "config.yaml")))
            if state is not None and state.completed:
                history = state.history
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
    if history is None:
        raise SystemExit(f"the run did not complete its rounds; see {work / 'simulate.log'}")
    denoiser = [entry["seconds"] for entry in history if entry["stage"] == "denoiser"]
    return {"denoiser_round_seconds": denoiser, "median_after_first": statistics.median(denoiser[1:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="a synthetic federation folder (privdiff synth)"
    )
    parser.add_argument("--config", default="demo")
    parser.add_argument("--rounds", type=int, default=6, help="denoiser rounds of one local step each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="", help="what this checkout is (e.g. a commit)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.repeats < 1:
        parser.error("--rounds must be >= 2 (the first is left out) and --repeats >= 1")
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="round-overhead-") as tmp:
            result = one_run(args.data.resolve(), Path(tmp), args.rounds, args.config, args.timeout)
        runs.append(result)
        print(f"run {repeat + 1}: denoiser rounds {result['denoiser_round_seconds']} s", flush=True)
        medians = [r["median_after_first"] for r in runs]
        report = {
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "label": args.label,
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip(),
            "config": args.config,
            "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "load_after": load_average(),
            "runs": runs,
            "median_round_s_mean": statistics.mean(medians),
            "median_round_s_std": statistics.stdev(medians) if len(medians) > 1 else 0.0,
        }
        write_report(args.json, report)  # after every run: nothing lost
    print(
        f"median denoiser round (1 local step): {report['median_round_s_mean']:.2f} ± "
        f"{report['median_round_s_std']:.2f} s over {len(runs)} runs -> {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
