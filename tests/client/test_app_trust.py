"""client/app_trust.py: the ClientApp process refuses any app package but the installed privdiff.

FABs are built by Flower's own builder (what `flwr run` ships) from this repository and from
copies of it that a compromised server could send."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from privdiff.client.app_trust import (
    SHIM_DIR,
    UntrustedAppError,
    app_digest,
    check_fab,
    fab_problems,
    installed_packages,
    pin_installed_app,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def roots():
    return installed_packages()


@pytest.fixture(scope="module")
def app_copy(tmp_path_factory):
    """The app folder `flwr run .` would package: pyproject, configs and privdiff's packages."""
    root = tmp_path_factory.mktemp("app") / "privdiff"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    for folder in ("client", "common", "server", "privdiff_core", "simulation", "configs"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _fab_of(folder: Path, edit=None) -> bytes:  # noqa: ANN001
    copy = folder.parent / f"edited-{len(list(folder.parent.iterdir()))}"
    shutil.copytree(folder, copy)
    if edit is not None:
        edit(copy)
    return build_fab_from_disk(copy)


def test_the_repositorys_own_package_is_accepted(roots, app_copy):
    fab = build_fab_from_disk(REPO)  # what the deployment test's `flwr run .` ships
    assert fab_problems(fab, roots) == []
    check_fab(fab, "0" * 64, roots)
    tops = {n.split("/")[0] for n in zipfile.ZipFile(BytesIO(fab)).namelist()}
    assert {"client", "common", "server", "privdiff_core", "pyproject.toml"} <= tops
    assert fab_problems(_fab_of(app_copy), roots) == []


def _append(path: str, text: str):  # noqa: ANN202
    """Append `text` to `path` in the app folder, and package every .py file (the server writes
    the pyproject too, fab-include included)."""

    def edit(root: Path) -> None:
        pyproject = (root / "pyproject.toml").read_text()
        start = pyproject.index("fab-include = [")
        end = pyproject.index("]", start) + 1
        (root / "pyproject.toml").write_text(
            pyproject[:start] + 'fab-include = ["**/*.py"]' + pyproject[end:]
        )
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as handle:
            handle.write(text)

    return edit


def _component(root: Path) -> None:
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(
        text.replace('clientapp = "privdiff.client.client_app:app"', 'clientapp = "x:app"')
    )


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        # a server that reads the site's images from inside privdiff's own ClientApp
        (
            _append("client/client_app.py", "\nimport shutil  # copy the data out\n"),
            "client/client_app.py: differs",
        ),
        (_append("common/npy.py", "\n"), "common/npy.py: differs"),  # even a blank line
        (_append("privdiff_core/stealer.py", "x = 1\n"), "privdiff_core/stealer.py: not part of"),
        (_append("numpy.py", "x = 1\n"), "numpy.py: code outside"),  # would shadow the real numpy
        (_append("evil/__init__.py", "x = 1\n"), "evil/__init__.py: code outside"),
        (_component, "clientapp is 'x:app'"),
    ],
)
def test_any_other_code_is_refused_with_a_clear_reason(roots, app_copy, edit, problem):
    fab = _fab_of(app_copy, edit)
    problems = fab_problems(fab, roots)
    assert any(problem in p for p in problems), problems
    with pytest.raises(UntrustedAppError, match="REFUSING app package 1234abcd"):
        check_fab(fab, "1234abcd" * 8, roots)


def test_not_a_zip_is_refused(roots):
    assert fab_problems(b"not a zip", roots) == ["not a zip archive"]


def test_the_shim_runs_the_check_with_this_python(tmp_path):
    folder = pin_installed_app(tmp_path)
    shim = folder / "flwr-clientapp"
    assert folder == tmp_path / SHIM_DIR and os.access(shim, os.X_OK)
    assert shim.read_text().startswith(f"#!{sys.executable}\n")
    # the shim is Flower's flwr-clientapp CLI (same arguments) behind the check
    result = subprocess.run([str(shim), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "--runtime-api-address" in result.stdout
    assert len(app_digest(installed_packages())) == 64
