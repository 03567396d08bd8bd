"""The SecAgg+ server's per-value work, measured alone: what a round at 100 sites costs it.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/secagg_server_ops.py \\
        --out benchmarks/results/secagg_server_ops.json

privdiff's SecAgg+ server (server/secagg.py, common/secagg.py) does two kinds of work per parameter:
- sum: add each active site's masked uint32 upload into the total (once per active site);
- unmask: subtract one AES-256-CTR key stream per active site (its private mask) and, for each
  dropped site, one per active neighbour of it (the pairwise masks it can no longer cancel).
So a round's server compute is about  P * (n_active * (t_sum + t_stream) + d * k_active * t_stream).
Both per-value times are measured here on the CPU (process CPU time: load from other processes
barely moves it), on the very functions the server runs, over --values values, best of --repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import time
from pathlib import Path

import numpy as np
from measure import load_average, write_report

from privdiff.common.secagg import _apply_streams, private_mask_stream


def cpu_seconds(fn, repeats: int) -> float:
    """Best process-CPU time of `repeats` calls: the run nothing else interrupted."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--values", type=int, default=16_000_000, help="vector length (default 16M)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/secagg_server_ops.json"))
    args = parser.parse_args()
    if args.values < 1 or args.repeats < 1:
        parser.error("--values and --repeats must be >= 1")
    rng = np.random.default_rng(0)
    total = rng.integers(0, 2**32, args.values, dtype=np.uint32)
    upload = rng.integers(0, 2**32, args.values, dtype=np.uint32)
    load_before = load_average()

    def add() -> None:
        np.add(total, upload, out=total)  # modulo 2**32, as the server's `total += vector`

    def unmask() -> None:
        _apply_streams(total, [(-1, private_mask_stream(secrets.token_bytes(32)))])

    sum_s, stream_s = cpu_seconds(add, args.repeats), cpu_seconds(unmask, args.repeats)
    payload = {
        "benchmark": "secagg_server_ops",
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "values": args.values,
        "sum_ns_per_value": sum_s / args.values * 1e9,
        "mask_stream_ns_per_value": stream_s / args.values * 1e9,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "note": "process CPU time, one thread, best of repeats; measured on a loaded shared machine",
    }
    markdown = (
        "Measured on a loaded machine (process CPU time, 1 thread, best of "
        f"{args.repeats}; load 1m {load_before[0]:.1f}).\n\n"
        "| server operation | ns per value |\n|---|---|\n"
        f"| sum one masked upload (uint32 add) | {payload['sum_ns_per_value']:.2f} |\n"
        f"| remove one AES-256-CTR mask stream | {payload['mask_stream_ns_per_value']:.2f} |\n"
    )
    write_report(args.out, payload, markdown)
    print(markdown)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
