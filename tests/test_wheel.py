"""The wheel a hospital installs: built from the checkout, installed into a fresh virtualenv
outside it, run from a folder outside it.

The fresh venv gets its dependencies from the test venv without seeing the test venv's own
install of privdiff: a .pth file lists the test venv's site-packages folders, and folders a .pth
file names are put on sys.path without their own .pth files being run, so the editable
install's import hook (a .pth file) never loads. The wheel is installed before that .pth file
exists, so pip neither sees nor touches the test venv's privdiff. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from privdiff_core.signing import load_public_key, verify_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Top-level entries of the checkout that are no part of the wheel's sources (copying them would
# only cost time): the build runs on a copy so that no build/ or egg-info lands in the checkout.
NOT_SOURCES = {
    ".git",
    ".venv",
    "tests",
    "runs",
    "data",
    "out",
    "trial",
    "build",
    "dist",
    "benchmarks",
    "docs",
}
NAMESPACED = {"client": "privdiff/client", "common": "privdiff/common", "server": "privdiff/server"}
NAMESPACED |= {"simulation": "privdiff/simulation", "privdiff_core": "privdiff_core"}


def _site_dirs() -> list[str]:
    """The folders the test venv imports installed packages from (its own site-packages, and
    whatever those chain to), never the checkout."""
    dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    dirs += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(str(Path(d).resolve()) for d in dirs if Path(d).is_dir()))


def _setuptools_major() -> int:
    try:
        return int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        return 0


def _clean_env() -> dict[str, str]:
    """This process's environment without what would let a child Python see the checkout or the
    test venv's editable install: Flower's Ray backend sets PYTHONPATH to the driver's sys.path for
    good, so after an in-process simulation pip saw the editable privdiff as installed and skipped
    the wheel."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONUSERBASE")
    drop += ("PIP_TARGET", "PIP_PREFIX", "PIP_USER")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps .` on a copy of the checkout's sources."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for entry in REPO.iterdir():
        if entry.name in NOT_SOURCES or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, src / entry.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(entry, src / entry.name)
    # The test venv's own setuptools when it is new enough (pyproject's build requirement): no
    # download. Otherwise pip fetches it from the configured registries.
    isolation = ["--no-build-isolation"] if _setuptools_major() >= 69 else []
    done = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(root / "dist"), str(src)],
        root,
        _clean_env(),
        600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [built] = (root / "dist").glob("privdiff-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv (no --system-site-packages) with the wheel installed; its environment."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    done = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, _clean_env(), 120)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    done = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        root,
        _clean_env(),
        300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, {}, 60
    )
    Path(purelib.stdout.strip(), "test-venv-dependencies.pth").write_text("\n".join(_site_dirs()) + "\n")
    env = _clean_env()
    env |= {"PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "HOME": str(root), "OMP_NUM_THREADS": "1"}
    env |= {
        "FLWR_HOME": str(root / "flwr-home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    return venv, env


def test_the_wheel_holds_every_module_and_the_data_under_namespaced_names(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, installed in NAMESPACED.items():
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"{installed}/{path.relative_to(REPO / folder).as_posix()}" in names
    for config in (REPO / "configs").glob("*.yaml"):
        assert f"privdiff/configs/{config.name}" in names
    for table in (REPO / "client" / "deid").glob("*.csv"):
        assert f"privdiff/client/deid/{table.name}" in names
    tops = {name.split("/")[0] for name in names}
    assert tops & {"client", "common", "server", "simulation", "configs"} == set()


def test_the_installed_wheel_runs_outside_the_checkout(venv, tmp_path):
    folder, env = venv
    python = str(folder / "bin" / "python")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    for generic in ("client", "server", "simulation", "common"):
        done = _run([python, "-c", f"import {generic}"], cwd, env, 120)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, (generic, done.stderr)
    probe = (
        "import privdiff.client, privdiff_core; from privdiff_core.config import CONFIG_DIR, load_config; "
        "load_config('demo'); print(privdiff.client.__file__, privdiff_core.__file__, CONFIG_DIR)"
    )
    done = _run([python, "-c", probe], cwd, env, 120)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.split():
        assert Path(line).resolve().is_relative_to(folder.resolve()), (
            line
        )  # the wheel's copy, not the checkout
    for command in (
        ["privdiff", "--help"],
        ["privdiff-client", "--help"],
        ["privdiff", "simulate", "--help"],
    ):
        done = _run(command, cwd, env, 300)
        assert done.returncode == 0 and "usage" in done.stdout, (command, done.stdout + done.stderr)

    run = tmp_path / "run"
    done = _run(
        [
            "privdiff",
            "simulate",
            "--config",
            "tiny",
            "--no-evaluate",
            "--no-progress",
            f"out={run}",
            "federation.sites=2",
            "federation.min_sites=2",
            # a loaded shared machine can take minutes to start a site's first Ray actor (torch
            # import): the default 120 s for a site's answer once left a site out
            "federation.secagg.timeout_s=600",
        ],
        cwd,
        env,
        900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metadata = verify_model(run / "anonymizer", load_public_key(run / "keys" / "model-signing.pub"))[
        "metadata"
    ]
    assert metadata["secagg"] is True and metadata["sites"] == 2
    acks = json.loads((run / "distribution.json").read_text())["sites"]
    assert len(acks) == 2 and all(a["installed"] for a in acks)
    assert list((run / "anonymized" / "site_00").glob("0*.png"))
