"""The import arrows of docs/architecture.md, read from the source with `ast` (imports inside
functions included): a site installs no ServerApp code, the server no site code, privdiff_core
no Flower, and Flower's internals are reached through one module only."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOWER_INTERNALS = REPO / "common" / "flower_internals.py"
# Flower's documented API: these packages' __all__ (flwr==1.42.0). Anything else is internal.
FLOWER_PUBLIC = (
    "flwr.app",
    "flwr.clientapp",
    "flwr.clientapp.mod",
    "flwr.serverapp",
    "flwr.serverapp.strategy",
    "flwr.client",
    "flwr.client.mod",
    "flwr.server",
    "flwr.server.strategy",
    "flwr.server.workflow",
    "flwr.common",
    "flwr.simulation",
)
# What each folder may not import (by its first name after an optional `privdiff.` namespace).
FORBIDDEN = {
    "client": {"server"},
    "server": {"client"},
    "common": {"client", "server", "simulation"},
    "privdiff_core": {"flwr", "client", "server", "simulation", "common"},
}


def _imports(path: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, module, imported names) of every import in `path`, wherever it sits, and of
    importlib.import_module("...") calls with a literal name."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, tuple(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value, ()


def _package(module: str) -> str:
    return module.removeprefix("privdiff.").split(".")[0]


def _modules(folder: str) -> list[Path]:
    return sorted(path for path in (REPO / folder).rglob("*.py") if "__pycache__" not in path.parts)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_folder_imports_what_its_side_must_not_run(folder):
    modules = _modules(folder)
    assert modules, f"no modules under {folder}/"
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in modules
        for line, module, names in _imports(path)
        if _package(module) in FORBIDDEN[folder]
        or (module == "privdiff" and FORBIDDEN[folder] & set(names))  # from privdiff import server
    ]
    assert wrong == []


def _flower_internals_used(path: Path, root: Path = REPO) -> list[str]:
    public_names = {name: set(importlib.import_module(name).__all__) for name in FLOWER_PUBLIC}
    used = []
    for line, module, names in _imports(path):
        if module != "flwr" and not module.startswith("flwr."):
            continue
        internal = module not in public_names or not names or set(names) - public_names[module]
        if internal:
            used.append(f"{path.relative_to(root)}:{line} {module} {list(names)}")
    return used


def test_flower_internals_are_touched_in_one_module_only():
    used = [
        problem
        for folder in ("client", "common", "server", "simulation")
        for path in _modules(folder)
        if path != FLOWER_INTERNALS
        for problem in _flower_internals_used(path)
    ]
    assert used == []
    assert _flower_internals_used(FLOWER_INTERNALS), "the internals module no longer uses internals"
    assert "flwr==1.42.0" in ast.get_docstring(ast.parse(FLOWER_INTERNALS.read_text()))


def test_the_checker_sees_a_client_to_server_import(tmp_path):
    """The graph check reads lazy imports and namespaced names (a check that cannot fail proves
    nothing)."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from privdiff.server import workflow\n    import flwr.supercore\n"
        "    from flwr.app import Message\n    from flwr.common import _secret\n"
    )
    found = [(module_name, _package(module_name)) for _, module_name, _ in _imports(module)]
    assert found == [
        ("privdiff.server", "server"),
        ("flwr.supercore", "flwr"),
        ("flwr.app", "flwr"),
        ("flwr.common", "flwr"),
    ]
    assert _flower_internals_used(module, tmp_path) == [
        "m.py:3 flwr.supercore []",
        "m.py:5 flwr.common ['_secret']",
    ]
