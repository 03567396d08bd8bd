#!/usr/bin/env bash
# The GPU benchmark from a fresh clone, in one command (docs/scaling.md):
#
#   bash benchmarks/gpu.sh [gpu_benchmark.py options, e.g. --out /somewhere/gpu_benchmark.json]
#
# 1. stops at once, with one line, when python3's torch sees no CUDA GPU;
# 2. installs what the benchmark imports (pyproject.toml's dependencies, torch excepted: the
#    machine's CUDA build of torch stays): from the package index, or with PRIVDIFF_WHEELS=<folder>
#    from a folder of wheels on a machine without network;
# 3. runs benchmarks/gpu_benchmark.py from this checkout (no install of privdiff itself needed).
# PYTHON=<interpreter> picks another python than python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" - <<'PY' || exit 2
import sys
import torch
if not torch.cuda.is_available():
    print(f"gpu.sh: no CUDA GPU visible to {sys.executable} (torch {torch.__version__}, "
          f"CUDA build {torch.version.cuda or 'none'}); run it on a GPU machine", file=sys.stderr)
    sys.exit(2)
PY

mapfile -t deps < <("$PYTHON" - <<'PY'
import re, tomllib
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if re.match(r"torch\b", dep) is None:  # keep the machine's CUDA torch
        print(dep)
PY
)
source_args=()
if [[ -n "${PRIVDIFF_WHEELS:-}" ]]; then
  source_args=(--no-index --find-links "$PRIVDIFF_WHEELS")
fi
started=$(date +%s)
if ! "$PYTHON" -m pip install -q "${source_args[@]}" "${deps[@]}"; then
  echo "gpu.sh: installing the dependencies failed; the benchmark runs with what is there" >&2
fi
echo "gpu.sh: dependencies ready in $(( $(date +%s) - started )) s"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" benchmarks/gpu_benchmark.py "$@"
