"""The nginx config from `privdiff federation init` (deploy/nginx-fleet.conf) in front of a real
SuperLink: the Control API, the runtime API and /docs are refused, while a real site connects,
authenticates and stays online through the Fleet routes.

Needs nginx on the PATH (Debian/Ubuntu: `apt-get install nginx-light`); docs/deployment.md.
"""

from __future__ import annotations

import http.client
import ssl

import pytest
from processes import (
    REPO,
    Processes,
    flwr,
    free_port,
    nginx_command,
    online_nodes,
    port_open,
    site_command,
    superlink_command,
    wait_for,
)

from privdiff.server.cli import Kit, init
from privdiff.server.nginx import NGINX_TEMPLATE
from privdiff_core.synth import SynthParams, generate_federation

pytestmark = pytest.mark.slow


def _post(port: int, path: str, ca: str) -> int:
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=20)
    try:
        connection.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_shipped_config_is_the_template_federation_init_renders():
    assert (REPO / "deploy" / "nginx-fleet.conf").read_text() == NGINX_TEMPLATE


def test_nginx_exposes_only_the_fleet_api(tmp_path):
    superlink_port, public_port = free_port(), free_port()
    fed = tmp_path / "fed"
    init(
        Kit(
            fed,
            sites=1,
            host="localhost",
            public_port=public_port,
            superlink_port=superlink_port,
            config="tiny",
        )
    )
    generate_federation(
        tmp_path / "data", SynthParams(sites=1, patients=4, images_per_patient=1, size=32), progress=False
    )
    ca = str(fed / "ca" / "ca.crt")
    procs = Processes(tmp_path / "logs")
    operator = procs.env(fed / "flwr-home")
    try:
        procs.start(
            "superlink", superlink_command(fed, superlink_port), procs.env(tmp_path / "superlink-home")
        )
        procs.start("nginx", nginx_command(fed), procs.env(tmp_path / "nginx-home"))
        wait_for(lambda: port_open(superlink_port) and port_open(public_port), 90, "SuperLink and nginx")

        # What the sites can reach: Fleet yes (answered by the SuperLink), anything else no.
        for path in (
            "/v1/control/start-run",
            "/v1/control/list-nodes",
            "/v1/control/register-node",
            "/v1/runtime/pull-task-input",
            "/docs",
            "/health",
        ):
            assert _post(public_port, path, ca) == 403, path
        fleet_direct = _post(superlink_port, "/v1/fleet/get-run", ca)
        assert fleet_direct not in (403, 404)
        assert _post(public_port, "/v1/fleet/get-run", ca) == fleet_direct  # the SuperLink's own answer
        # ...while on the server's loopback the Control API takes requests (it wants protobuf, not
        # JSON: 415) and, below, registers a site for whoever asks: why it must be fenced
        assert _post(superlink_port, "/v1/control/list-nodes", ca) not in (403, 404)

        # A real site through the proxy: registers, authenticates with its key, stays online.
        registered = flwr(
            [
                "supernode",
                "register",
                str(fed / "sites" / "site_00" / "auth_key.pub"),
                "privdiff",
                "--name",
                "site_00",
            ],
            operator,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        procs.start(
            "site_00",
            site_command(
                f"localhost:{public_port}",
                tmp_path / "data" / "site_00",
                fed / "sites" / "site_00",
                tmp_path / "store",
                free_port(),
            ),
            procs.env(tmp_path / "site-home"),
        )
        wait_for(
            lambda: len(online_nodes(operator)) == 1, 120, "the site to come online through nginx", every=3
        )
        proxied = (fed / "superlink" / "nginx" / "access.log").read_text()
        assert "POST /v1/fleet/activate-node" in proxied and "POST /v1/fleet/send-node-heartbeat" in proxied
    finally:
        procs.stop_all()
