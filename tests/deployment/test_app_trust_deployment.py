"""A site refuses an app package that is not the privdiff it installed (real processes).

A plaintext SuperLink on 127.0.0.1 and one site started with `privdiff-client start`; the
operator submits, with `flwr run`, a copy of privdiff whose ClientApp was changed to leave a
file behind when imported (a compromised server's package). The site's `flwr-clientapp` refuses
it before importing any of it: one ERROR line in the site's log, an error reply, no file, and
the run fails for want of sites. The honest package is accepted: test_federation_deployment.py
runs its whole federation through the same check.
"""

from __future__ import annotations

import re
import shutil

import pytest
from processes import (
    BIN,
    REPO,
    Processes,
    free_port,
    port_open,
    run_ended,
    site_command,
    submit_run,
    wait_for,
)

from privdiff_core.signing import generate_signing_key
from privdiff_core.synth import SynthParams, generate_federation

pytestmark = pytest.mark.slow


def test_a_site_refuses_an_app_package_it_did_not_install(tmp_path):
    port = free_port()
    generate_federation(
        tmp_path / "data", SynthParams(sites=1, patients=4, images_per_patient=2, size=32), progress=False
    )
    generate_signing_key(tmp_path / "signing.pem", tmp_path / "signing.pub")
    app = tmp_path / "tampered-app"
    app.mkdir()
    shutil.copy(REPO / "pyproject.toml", app)
    for folder in ("client", "common", "server", "privdiff_core", "configs"):
        shutil.copytree(REPO / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "TAMPERED-CODE-RAN"
    with open(app / "client" / "client_app.py", "a") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').close()  # a server's code, next to the images\n")

    procs = Processes(tmp_path / "logs")
    operator_home = tmp_path / "operator"
    operator_home.mkdir()
    (operator_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    operator = procs.env(operator_home)
    try:
        procs.start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            procs.env(tmp_path / "superlink-home"),
        )
        wait_for(lambda: port_open(port), 90, "the SuperLink to listen")
        site = tmp_path / "data" / "site_00"
        procs.start(
            "site",
            [
                *site_command(f"127.0.0.1:{port}", site, None, tmp_path / "store", free_port()),
                "--allow-unmasked-updates",
            ],
            procs.env(tmp_path / "site-home"),
        )
        wait_for(lambda: "runs only its installed privdiff app" in procs.log("site"), 60, "the site to start")
        run_id = submit_run(
            str(app),
            "local",
            f"config='tiny' signing-key='{tmp_path / 'signing.pem'}' out='{tmp_path / 'run'}' "
            "overrides='federation.secagg.enabled=false federation.min_sites=1 federation.sites=1 "
            "federation.rounds.denoiser=0 federation.wait_for_sites_s=120'",
            operator,
        )
        status = wait_for(lambda: run_ended(operator, run_id), 400, "the run to end", every=5)
        assert status == "finished:failed"
        log = procs.log("site")
        assert re.search(r"ERROR.*REFUSING app package [0-9a-f]{16}: it is not the privdiff app", log), log[
            -3000:
        ]
        assert "client/client_app.py: differs from the installed file" in log
        assert not marker.exists()  # nothing of the package was imported
        assert not (tmp_path / "run" / "anonymizer").exists()
        assert procs.started["site"].poll() is None  # the site stays up for honest runs
    finally:
        procs.stop_all()
