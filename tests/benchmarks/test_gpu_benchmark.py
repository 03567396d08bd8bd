"""The GPU benchmark must not rot while no GPU is lent: it fails fast without one, and its CPU
dry run goes through every section (anonymize, both training stages, a 3-site federated run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_benchmark.py"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the real run applies")


def _run(args: list[str], tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,  # the interpreter gpu.sh uses
        "HOME": str(tmp_path),  # Flower's and Ray's per-user state stays inside the test
        "OMP_NUM_THREADS": "1",
    }
    env.pop("FLWR_HOME", None)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@no_gpu
def test_without_a_gpu_the_script_stops_at_once_with_one_clear_line(tmp_path):
    out = tmp_path / "gpu.json"
    result = _run([sys.executable, str(SCRIPT), "--out", str(out)], tmp_path, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--dry-run" in lines[0]
    assert not out.exists()
    assert "==" not in result.stdout  # it stopped before the first section, before any model


@no_gpu
def test_gpu_sh_refuses_before_installing_anything_without_a_gpu(tmp_path):
    result = _run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], tmp_path, timeout=300)
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr
    assert "dependencies" not in result.stdout + result.stderr  # pip never ran


@pytest.mark.slow
def test_dry_run_measures_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-dry-run.json"
    result = _run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["config"] == "tiny"
    assert report["environment"]["device"] == "cpu"
    anonymize = report["anonymize"]
    measured = {(p["mode"], p["batch"]) for p in anonymize["points"]}
    assert measured == {(m, b) for m in ("img2img", "generative") for b in (1, 2)}
    for point in anonymize["points"]:
        assert point["images_per_s"] > 0 and point["peak_memory_mb"] > 0
    by_mode = {p["mode"]: p["denoising_steps"] for p in anonymize["points"]}
    assert by_mode["generative"] > by_mode["img2img"]  # the generative pass runs every DDIM step
    assert anonymize["attention_processors"]  # which processors ran is on record
    for stage in ("autoencoder", "denoiser"):
        assert report["training"][stage]["steps_per_s"] > 0
    simulation = report["simulation"]
    assert simulation["sites"] == 3 and simulation["secagg"] is True
    assert simulation["round_s_median"] > 0 and simulation["sent_bytes_per_site"] > 0


def test_the_checkout_imports_as_installed_where_privdiff_is_not_installed(tmp_path):
    """A GPU machine has its own torch and no privdiff install: measure.import_checkout must give
    privdiff_core and the configs (privdiff.configs, setup.py's package-dir) from the checkout,
    to the process and to the commands it starts. `python -S` stands in for that machine: no
    site-packages, so no installed privdiff (nor torch: only the stdlib is imported)."""
    probe = (
        "import os, subprocess, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('privdiff') is None\n"
        "from measure import import_checkout\n"
        f"import_checkout(__import__('pathlib').Path({str(ROOT)!r}))\n"
        "import privdiff.configs, privdiff_core\n"
        "from importlib import resources\n"
        "configs = resources.files('privdiff.configs').iterdir()\n"
        "print(sorted(p.name for p in configs if p.name.endswith('.yaml')))\n"
        "child = 'import privdiff.configs, privdiff_core; print(privdiff_core.__file__)'\n"
        "print(subprocess.run([sys.executable, '-S', '-c', child], capture_output=True, text=True,"
        " check=True).stdout.strip())\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    configs, core = result.stdout.strip().splitlines()
    assert configs == "['demo.yaml', 'paper.yaml', 'tiny.yaml']"
    assert Path(core) == ROOT / "privdiff_core" / "__init__.py"
