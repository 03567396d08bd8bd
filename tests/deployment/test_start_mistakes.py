"""The mistakes a newcomer makes when setting up a federation, against a real SuperLink behind the
real nginx fence on 127.0.0.1: each ends within seconds with one line of advice and a non-zero
exit status, never a traceback or a hang.

Needs nginx (apt-get install nginx-light); docs/deployment.md, Troubleshooting.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from processes import BIN, Processes, flwr, free_port, nginx_command, port_open, superlink_command, wait_for

from privdiff.server.cli import Kit, init
from privdiff_core.synth import SynthParams, generate_federation

pytestmark = pytest.mark.slow

SECONDS = 60  # "within seconds" on a loaded 2-core machine: pre-flight, or Flower's first refusal


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A kit, its SuperLink and nginx running, site_00 registered, site_01 never registered."""
    root = tmp_path_factory.mktemp("mistakes")
    kit = Kit(root / "fed", sites=2, public_port=free_port(), superlink_port=free_port(), config="tiny")
    init(kit)
    init(Kit(root / "other", sites=1, config="tiny"))  # another federation's bundle
    generate_federation(
        root / "data", SynthParams(sites=2, patients=3, images_per_patient=1, size=32), progress=False
    )
    procs = Processes(root / "logs")
    operator = procs.env(kit.out / "flwr-home")
    try:
        procs.start("superlink", superlink_command(kit.out, kit.superlink_port), procs.env(root / "sl-home"))
        procs.start("nginx", nginx_command(kit.out), procs.env(root / "nginx-home"))
        wait_for(
            lambda: port_open(kit.superlink_port) and port_open(kit.public_port), 90, "SuperLink and nginx"
        )
        registered = flwr(
            [
                "supernode",
                "register",
                str(kit.out / "sites" / "site_00" / "auth_key.pub"),
                "privdiff",
                "--name",
                "site_00",
            ],
            operator,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        yield kit, root, procs
    finally:
        procs.stop_all()


def _start(federation: tuple, site: str, **change: str) -> tuple[int, str, float]:
    """`privdiff-client start` as COMMANDS.md gives it for `site`, with some flags changed."""
    kit, root, procs = federation
    bundle = kit.out / "sites" / site
    flags = {
        "--superlink": f"localhost:{kit.public_port}",
        "--data": str(root / "data" / site),
        "--port": str(free_port()),
        "--root-certificates": str(bundle / "ca.crt"),
        "--auth-key": str(bundle / "auth_key"),
        "--public-key": str(bundle / "federation-public.pem"),
        "--model-store": str(root / "stores" / site),
    }
    flags.update({f"--{key.replace('_', '-')}": value for key, value in change.items()})
    command = [str(BIN / "privdiff-client"), "start", *[item for pair in flags.items() for item in pair]]
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=SECONDS * 3, env=procs.env(root / site)
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def _advice(output: str) -> str:
    """The command's last line: its one line of advice."""
    last = output.strip().splitlines()[-1]
    assert "Traceback" not in output, output[-3000:]
    assert last.startswith("privdiff-client start: error: "), output[-3000:]
    return last


def test_the_model_signing_key_passed_as_the_ca(federation):
    kit, root, _ = federation
    pem = kit.out / "sites" / "site_00" / "federation-public.pem"
    status, output, seconds = _start(federation, "site_00", root_certificates=str(pem))
    assert status == 2 and seconds < SECONDS
    assert "is a public key (the model-signing key federation-public.pem?)" in _advice(output)


def test_the_ca_of_another_federation(federation):
    kit, root, _ = federation
    other_ca = root / "other" / "sites" / "site_00" / "ca.crt"
    status, output, seconds = _start(federation, "site_00", root_certificates=str(other_ca))
    assert status == 2 and seconds < SECONDS
    assert "not signed by --root-certificates" in _advice(output)


def test_an_unregistered_site_key_gets_the_register_command(federation):
    kit, root, _ = federation
    status, output, seconds = _start(federation, "site_01")
    assert status == 2 and seconds < SECONDS, (status, seconds)
    advice = _advice(output)
    assert "Flower code 2004: not registered" in advice
    assert f"flwr supernode register {kit.out / 'sites' / 'site_01' / 'auth_key'}.pub privdiff" in advice


def test_a_second_site_on_the_same_runtime_port(federation):
    kit, root, _ = federation
    with socket.socket() as first_site:
        first_site.bind(("127.0.0.1", 0))
        first_site.listen()
        port = first_site.getsockname()[1]
        status, output, seconds = _start(federation, "site_00", port=str(port))
    assert status == 2 and seconds < SECONDS
    assert f"--port {port} is already in use on this host" in _advice(output)


def test_data_that_is_not_a_site_folder(federation):
    kit, root, _ = federation
    status, output, seconds = _start(federation, "site_00", data=str(root / "data"))
    assert status == 2 and seconds < SECONDS
    assert "holds 2 sites' folders" in _advice(output)


def test_flwr_against_the_public_port_is_told_where_the_operator_api_is(federation, tmp_path):
    kit, _, procs = federation
    home = tmp_path / "flwr-home"
    home.mkdir()
    config = (kit.out / "flwr-home" / "config.toml").read_text()
    (home / "config.toml").write_text(config.replace(f":{kit.superlink_port}", f":{kit.public_port}"))
    started = time.monotonic()
    result = flwr(["run", ".", "privdiff"], procs.env(home), timeout=SECONDS * 3)
    assert result.returncode != 0 and time.monotonic() - started < SECONDS
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stdout + result.stderr).split())  # rich's box
    assert "privdiff: this port serves only the Fleet API" in said
    assert f"against the SuperLink at 127.0.0.1:{kit.superlink_port}" in said
