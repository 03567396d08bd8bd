"""A real federation on 127.0.0.1, set up exactly as `privdiff federation init` prints it.

`flower-superlink` with TLS (certificates from `federation init`) and SuperNode authentication,
two registered sites started with `privdiff-client start`, the run submitted with `flwr run .`
(FLWR_HOME in a temp folder, runtime dependency installation disabled): one SecAgg+ round of
the tiny PrivDiff-Net completes, the server signs the anonymizer and both sites verify and
install it. A site whose key was never registered and a site speaking plaintext are refused.
Expect a few minutes: Flower polls every 3 s and every message starts a fresh ClientApp process.
"""

from __future__ import annotations

import json
import re

import pytest
from processes import (
    Processes,
    flwr,
    free_port,
    online_nodes,
    port_open,
    run_ended,
    site_command,
    submit_run,
    superlink_command,
    wait_for,
)

from privdiff.common.distribution import current_model
from privdiff.server.cli import Kit, init
from privdiff_core.signing import load_public_key, verify_model
from privdiff_core.synth import SynthParams, generate_federation

pytestmark = pytest.mark.slow


def test_tls_authenticated_round_signed_model_and_refusals(tmp_path):
    superlink_port = free_port()
    fed = tmp_path / "fed"
    init(
        Kit(
            fed,
            sites=3,
            host="localhost",
            public_port=free_port(),
            superlink_port=superlink_port,
            config="tiny",
        )
    )
    generate_federation(
        tmp_path / "data", SynthParams(sites=3, patients=6, images_per_patient=2, size=32), progress=False
    )
    procs = Processes(tmp_path / "logs")
    operator = procs.env(fed / "flwr-home")  # the config.toml `federation init` wrote
    superlink = f"localhost:{superlink_port}"
    try:
        procs.start(
            "superlink", superlink_command(fed, superlink_port), procs.env(tmp_path / "superlink-home")
        )
        wait_for(lambda: port_open(superlink_port), 90, "the SuperLink to listen")
        registered = set()
        for site in ("site_00", "site_01"):  # site_02 keeps a key the SuperLink never saw
            result = flwr(
                [
                    "supernode",
                    "register",
                    str(fed / "sites" / site / "auth_key.pub"),
                    "privdiff",
                    "--name",
                    site,
                ],
                operator,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            registered.add(int(re.search(r"SuperNode (\d+) registered", result.stdout).group(1)))

        for i in range(3):
            site = f"site_{i:02d}"
            procs.start(
                site,
                site_command(
                    superlink,
                    tmp_path / "data" / site,
                    fed / "sites" / site,
                    tmp_path / "stores" / site,
                    free_port(),
                ),
                procs.env(tmp_path / f"{site}-home"),
            )
        procs.start(
            "plaintext",
            site_command(
                superlink, tmp_path / "data" / "site_02", None, tmp_path / "stores" / "plaintext", free_port()
            ),
            procs.env(tmp_path / "plaintext-home"),
        )

        # the unregistered site is turned away (Flower's code 2004) and its command exits
        status = wait_for(lambda: procs.started["site_02"].poll(), 120, "the unregistered site to give up")
        assert status != 0
        assert "2004" in procs.log("site_02")
        wait_for(lambda: online_nodes(operator) == registered, 120, "both registered sites online", every=3)

        run_id = submit_run(
            ".",
            "privdiff",
            f"config='tiny' signing-key='{fed / 'signing' / 'model-signing.pem'}' "
            f"out='{tmp_path / 'run'}' overrides='federation.rounds.denoiser=0 "
            "federation.min_sites=2 federation.sites=2 federation.wait_for_sites_s=120'",
            operator,
        )

        status = wait_for(lambda: run_ended(operator, run_id), 900, "the federated run to finish", every=5)
        assert status == "finished:completed", flwr(["log", run_id, "--show"], operator).stdout[-3000:]

        # the plaintext site never got in, however long it tried
        assert procs.started["plaintext"].poll() is None
        assert "Connection attempt failed" in procs.log("plaintext")
        assert online_nodes(operator) == registered

        public_key = load_public_key(fed / "signing" / "model-signing.pub")
        payload = verify_model(tmp_path / "run" / "anonymizer", public_key)
        assert payload["metadata"]["secagg"] is True and payload["metadata"]["sites"] == 2
        assert payload["metadata"]["rounds"] == {"autoencoder": 1, "denoiser": 0}
        acks = json.loads((tmp_path / "run" / "distribution.json").read_text())["sites"]
        assert len(acks) == 2 and all(a["installed"] for a in acks)
        for site in ("site_00", "site_01"):
            installed = current_model(tmp_path / "stores" / site)
            assert installed is not None
            verify_model(installed, load_public_key(fed / "sites" / site / "federation-public.pem"))
        assert current_model(tmp_path / "stores" / "site_02") is None
    finally:
        procs.stop_all()
