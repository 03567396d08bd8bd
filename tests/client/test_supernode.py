"""`privdiff-client start` (client/supernode.py): the SuperNode command line, its node_config,
its environment, and a child process whose signals and exit status pass through."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from privdiff.client.supernode import add_arguments, node_config, supernode_command
from privdiff_core.errors import PrivdiffError


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--superlink", "fl.example.org:9092", "--data", str(tmp_path / "data"), *extra])


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("ca.crt", "auth_key", "federation-public.pem"):
        (tmp_path / name).write_text(name)
    return tmp_path


def test_node_config_survives_flowers_parser_even_with_odd_paths(tmp_path):
    data = tmp_path / "hospital A's images"  # a space and a quote
    text = node_config(data, tmp_path / "store", tmp_path / "k.pem", tmp_path / "cache", require_secagg=True)
    parsed = parse_config_args([text])
    assert parsed == {
        "data": str(data),
        "model-store": str(tmp_path / "store"),
        "cache-dir": str(tmp_path / "cache"),
        "public-key": str(tmp_path / "k.pem"),
        "require-secagg": True,
    }
    backslash = Path("C:\\data\\site")
    assert parse_config_args([node_config(backslash, tmp_path, None, tmp_path, False)])["data"] == str(
        backslash
    )


def test_command_has_tls_site_key_absolute_paths_and_the_venv_on_path(bundle):
    args = _args(
        bundle,
        "--root-certificates",
        str(bundle / "ca.crt"),
        "--auth-key",
        str(bundle / "auth_key"),
        "--public-key",
        str(bundle / "federation-public.pem"),
        "--port",
        "9200",
    )
    command, env = supernode_command(args)
    assert command[0] == str(Path(sys.executable).parent / "flower-supernode")
    assert command[command.index("--superlink") + 1] == "fl.example.org:9092"
    assert command[command.index("--root-certificates") + 1] == str((bundle / "ca.crt").resolve())
    assert command[command.index("--auth-supernode-private-key") + 1] == str((bundle / "auth_key").resolve())
    assert command[command.index("--port") + 1] == "9200" and "--insecure" not in command
    config = parse_config_args([command[command.index("--node-config") + 1]])
    assert config["data"] == str((bundle / "data").resolve()) and config["require-secagg"] is True
    assert config["model-store"] == str((bundle / "privdiff-model-store").resolve())
    assert Path(config["model-store"]).is_dir()
    shim, venv_bin = env["PATH"].split(os.pathsep)[:2]  # the app-trust shim, then flower-superexec
    assert (Path(shim) / "flwr-clientapp").is_file() and venv_bin == str(Path(sys.executable).parent)
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"


def test_tls_material_is_required_unless_insecure_is_asked_for(bundle):
    with pytest.raises(PrivdiffError, match="--root-certificates is required"):
        supernode_command(_args(bundle, "--auth-key", str(bundle / "auth_key")))
    with pytest.raises(PrivdiffError, match="no such file"):
        supernode_command(
            _args(
                bundle,
                "--root-certificates",
                str(bundle / "missing.crt"),
                "--auth-key",
                str(bundle / "auth_key"),
            )
        )
    command, _ = supernode_command(_args(bundle, "--insecure", "--allow-unmasked-updates"))
    assert "--insecure" in command and "--root-certificates" not in command
    assert parse_config_args([command[command.index("--node-config") + 1]])["require-secagg"] is False


def test_a_missing_data_folder_is_an_error(tmp_path):
    with pytest.raises(PrivdiffError, match="--data"):
        supernode_command(_args(tmp_path, "--insecure"))


def test_signals_reach_the_supernode_and_its_exit_status_comes_back(bundle, tmp_path):
    """The real `run()`, with a stand-in SuperNode that exits 7 on SIGTERM."""
    stand_in = tmp_path / "supernode_stand_in.py"
    stand_in.write_text(
        textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
        print("ready", flush=True)
        time.sleep(60)
    """)
    )
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(f"""
        import argparse, sys
        import privdiff.client.supernode as supernode
        supernode.supernode_command = lambda args: ([sys.executable, {str(stand_in)!r}], None)
        supernode.preflight = lambda args: None
        args = argparse.Namespace(superlink="fl.example.org:9092", auth_key=None, port=9094, log=None)
        sys.exit(supernode.run(args))
    """)
    )
    process = subprocess.Popen(
        [sys.executable, str(driver)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout.readline().startswith("privdiff-client start:")
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 7
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
