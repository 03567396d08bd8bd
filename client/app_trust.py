"""A site runs only the privdiff code it installed, whatever app package the server sends.

Flower ships the server's app package (FAB: a zip of the app's folder) to every SuperNode, and the
ClientApp process puts it FIRST on `sys.path`: the server decides which code runs next to the
site's images. Flower's own guard (`flower-supernode --trusted-entities`) accepts only FABs
signed through Flower Hub (its `valid_license` record); a FAB submitted to our own SuperLink
with `flwr run` never carries one, so that flag would refuse every privdiff run.

privdiff guards the ClientApp process itself. `privdiff-client start` puts a folder first on the
SuperNode's PATH whose `flwr-clientapp` (the name Flower's SuperExec starts for every message)
is `main()` below: before any code of the FAB is imported it checks the FAB against the privdiff
the site installed, and refuses it, with one ERROR log line and an error reply to the server,
unless

- every Python file of the FAB inside privdiff's packages is byte-identical to the installed
  file (the pin: the site's own installation, summarised by `app_digest` in the start-up log),
- the FAB holds no other code (pyproject's fab-include packages only privdiff's packages), so
  it cannot shadow a module (`numpy.py` at its top level would be imported by privdiff's code),
- its pyproject names privdiff's ClientApp as the clientapp component.

The server keeps its say over data (the config, the global model), never over code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import stat
import sys
import tomllib
import zipfile
from collections.abc import Mapping
from logging import ERROR
from pathlib import Path

from flwr.common import log

from privdiff.common.flower_internals import run_clientapp_checked
from privdiff_core.errors import PrivdiffError

# What a privdiff FAB must match: its top-level folders (the checkout's layout, fab-include) and
# the installed packages they are (setup.py). The FAB's client/ is never imported as
# privdiff.client, but it is still checked: the server must ship exactly the site's code.
PACKAGES = {
    "client": "privdiff.client",
    "common": "privdiff.common",
    "server": "privdiff.server",
    "simulation": "privdiff.simulation",
    "privdiff_core": "privdiff_core",
}
CLIENT_COMPONENT = "privdiff.client.client_app:app"
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".pth")
SHIM_DIR = ".trusted-app-bin"  # inside the site's model store


class UntrustedAppError(PrivdiffError):
    """The server's app package is not the privdiff code this site installed."""


def installed_packages() -> dict[str, Path]:
    """The folders of privdiff's installed packages as this Python finds them now, keyed by the
    FAB folder each must match (call it before a FAB is put on sys.path)."""
    roots = {}
    for folder, package in PACKAGES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UntrustedAppError(f"privdiff's package {package!r} is not installed in {sys.prefix}")
        roots[folder] = Path(list(spec.submodule_search_locations)[0])
    return roots


def app_digest(roots: Mapping[str, Path]) -> str:
    """SHA-256 over the installed packages' Python files (path and content): the app version
    this site runs, printed at start so an operator can compare sites."""
    digest = hashlib.sha256()
    for name, root in sorted(roots.items()):
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def fab_problems(fab: bytes, roots: Mapping[str, Path]) -> list[str]:
    """What makes `fab` (the zip Flower ships) something other than the installed privdiff app;
    empty when it may run."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(fab))
    except zipfile.BadZipFile:
        return ["not a zip archive"]
    problems = []
    with archive:
        for name in archive.namelist():
            if name.endswith("/"):
                continue
            top, _, rest = name.partition("/")
            if top in roots and rest:
                if not name.endswith(CODE_SUFFIXES):
                    continue
                installed = roots[top] / rest
                if not installed.is_file():
                    problems.append(f"{name}: not part of the installed privdiff")
                elif installed.read_bytes() != archive.read(name):
                    problems.append(f"{name}: differs from the installed file")
            elif name.endswith(CODE_SUFFIXES):
                problems.append(f"{name}: code outside privdiff's packages")
        try:
            config = tomllib.loads(archive.read("pyproject.toml").decode())
            component = config["tool"]["flwr"]["app"]["components"]["clientapp"]
        except (KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            component = None
        if component != CLIENT_COMPONENT:
            problems.append(f"pyproject.toml: clientapp is {component!r}, not {CLIENT_COMPONENT!r}")
    return problems


def check_fab(fab: bytes, fab_hash: str, roots: Mapping[str, Path]) -> None:
    """Raise UntrustedAppError (after one ERROR log line) unless `fab` may run (fab_problems)."""
    problems = fab_problems(fab, roots)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        message = (
            f"REFUSING app package {fab_hash[:16]}: it is not the privdiff app this site installed "
            f"({shown}). Nothing of it was imported."
        )
        log(ERROR, message)
        raise UntrustedAppError(message)


def pin_installed_app(store: Path) -> Path:
    """The folder to put first on the SuperNode's PATH: its `flwr-clientapp` runs `main()` with
    this Python (rewritten at every start: the Python may have moved). Prints the digest of the
    installed app the site will accept."""
    digest = app_digest(installed_packages())
    print(f"privdiff-client start: this site runs only its installed privdiff app ({digest[:16]})")
    folder = store / SHIM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "flwr-clientapp"
    tmp = folder / f".flwr-clientapp.{os.getpid()}.tmp"
    tmp.write_text(f"#!{sys.executable}\nfrom privdiff.client.app_trust import main\n\nmain()\n")
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)
    tmp.replace(shim)
    return folder


def main() -> None:
    """`flwr-clientapp` with the FAB check in front of Flower's own (see module doc)."""
    roots = installed_packages()  # before the FAB joins sys.path
    run_clientapp_checked(lambda content, fab_hash: check_fab(content, fab_hash, roots))
