"""`privdiff federation init`: every key, certificate and command a real federation needs.

    privdiff federation init --sites 3 --out fed/ --superlink-host fl.hospital-a.org

writes (private keys mode 0600):

    fed/ca/ca.crt                            the federation's certificate authority; its key goes
    fed-ca-OFFLINE/ca.key                    OUTSIDE fed/: move it to offline storage (server/pki.py)
    fed/superlink/server.crt, server.key     the SuperLink's TLS certificate (localhost, 127.0.0.1,
                                             ::1 and --superlink-host), ca.crt, nginx-fleet.conf
    fed/signing/model-signing.pem, .pub      Ed25519: the server signs the anonymizer with it
    fed/sites/site_NN/                       what to hand to site NN: auth_key (its SuperNode
                                             identity), auth_key.pub, ca.crt, federation-public.pem
    fed/flwr-home/config.toml                the operator's `flwr` connection to the SuperLink
    fed/COMMANDS.md                          the exact commands, in order (also printed)
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

HELP = "set up a real federation: CA, TLS certificate, site keys, model-signing key, commands"

SUPERLINK_PORT = 9091  # the SuperLink itself, on loopback only (its Control API is unauthenticated)
PUBLIC_PORT = 9092  # nginx: the Fleet API only, what the sites connect to
CONNECTION = "privdiff"  # name of the operator's SuperLink connection in flwr-home/config.toml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "See docs/deployment.md for the topology and why the Control API must be fenced."
    sub = parser.add_subparsers(dest="federation_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="make the keys, certificates and commands of a new federation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--sites", type=int, required=True, help="number of hospitals (one key pair each)")
    init.add_argument(
        "--out", type=Path, required=True, help="new folder for everything (must not exist or be empty)"
    )
    init.add_argument(
        "--superlink-host",
        default="localhost",
        help="name or address the sites use to reach the server (in the TLS certificate)",
    )
    init.add_argument(
        "--public-port",
        type=int,
        default=PUBLIC_PORT,
        help=f"port the sites connect to, served by nginx (default {PUBLIC_PORT})",
    )
    init.add_argument(
        "--superlink-port",
        type=int,
        default=SUPERLINK_PORT,
        help=f"the SuperLink's own port on 127.0.0.1 (default {SUPERLINK_PORT})",
    )
    init.add_argument("--config", default="demo", help="privdiff config the run will use (default demo)")


def _flwr_config(address: str, ca: Path) -> str:
    return (
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\nroot-certificates = "{ca}"\n'
    )


def _double_quoted(text: str) -> str:
    """ "text" for the shell when nothing in it is special inside double quotes, else shlex."""
    return f'"{text}"' if not any(c in text for c in '"$`\\!') else shlex.quote(text)


def commands(out: Path, sites: int, host: str, public_port: int, superlink_port: int, config: str) -> str:
    """COMMANDS.md: what to run, where, in order (absolute paths into `out`)."""
    q = shlex.quote
    sl = out / "superlink"
    env = (
        "FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1"
    )
    lines = [
        "# privdiff federation: commands",
        "",
        f"Made by `privdiff federation init` for {sites} sites. Paths are absolute; the site bundles",
        "under `sites/` are copied to each hospital (only that site's folder, never `ca/` or `signing/`).",
        "Background and the security model: docs/deployment.md.",
        "",
        "## 1. Server: the SuperLink, on loopback only",
        "",
        "Its Control API (submit runs, register sites) shares the port with the Fleet API and is not",
        "authenticated in open-source Flower 1.42, so it must not be reachable from the network.",
        "",
        "```bash",
        f"{env} \\\n  flower-superlink --host 127.0.0.1 --port {superlink_port} \\\n"
        f"  --ssl-ca-certfile {q(str(sl / 'ca.crt'))} --ssl-certfile {q(str(sl / 'server.crt'))} "
        f"--ssl-keyfile {q(str(sl / 'server.key'))} \\\n"
        f"  --enable-supernode-auth --disable-runtime-dependency-installation "
        f"--database {q(str(sl / 'state.db'))}",
        "```",
        "",
        f"## 2. Server: nginx on port {public_port}, exposing only the Fleet API to the sites",
        "",
        "```bash",
        f"mkdir -p {q(str(sl / 'nginx'))} && nginx -p {q(str(sl / 'nginx'))} "
        f"-c {q(str(sl / 'nginx-fleet.conf'))} -g 'daemon off;'",
        "```",
        "",
        "## 3. Server: register every site's key (the operator's `flwr`, connection in flwr-home)",
        "",
        "```bash",
        f"export FLWR_HOME={q(str(out / 'flwr-home'))}",
    ]
    lines += [
        f"flwr supernode register {q(str(out / 'sites' / f'site_{i:02d}' / 'auth_key.pub'))} {CONNECTION} "
        f"--name site_{i:02d}"
        for i in range(sites)
    ]
    lines += [
        "```",
        "",
        "## 4. Each site: its SuperNode (site NN gets the folder sites/site_NN)",
        "",
        "```bash",
    ]
    for i in range(sites):
        bundle = out / "sites" / f"site_{i:02d}"
        lines.append(
            f"privdiff-client start --superlink {host}:{public_port} --data /data/site_{i:02d} \\\n"
            f"  --root-certificates {q(str(bundle / 'ca.crt'))} \\\n"
            f"  --auth-key {q(str(bundle / 'auth_key'))} \\\n"
            f"  --public-key {q(str(bundle / 'federation-public.pem'))} \\\n"
            f"  --model-store /srv/privdiff/model-store"
        )
    run_config = (
        f"config='{config}' signing-key='{out / 'signing' / 'model-signing.pem'}' "
        f"out='{out / 'runs' / config}'"
    )
    lines += [
        "```",
        "",
        "## 5. Server: submit the federated run (from a privdiff checkout)",
        "",
        "```bash",
        f"export FLWR_HOME={q(str(out / 'flwr-home'))}",
        f"flwr run . {CONNECTION} --run-config {_double_quoted(run_config)} --stream",
        "```",
        "",
        f"The signed anonymizer lands in {out / 'runs' / config / 'anonymizer'} and in every site's",
        "model store (`MODEL_STORE/current`); `privdiff-client verify` checks it again at the site.",
        "",
    ]
    return "\n".join(lines)


def init(out: Path, sites: int, host: str, public_port: int, superlink_port: int, config: str) -> str:
    """Write everything listed in the module doc; returns COMMANDS.md's text."""
    from privdiff_core.signing import generate_signing_key
    from server.errors import FederationError
    from server.nginx import render_nginx
    from server.pki import make_auth_key, make_ca, make_server_cert, offline_ca_key_path

    if sites < 1:
        raise FederationError("--sites must be at least 1")
    if out.exists() and any(out.iterdir()):
        raise FederationError(
            f"{out} is not empty: a federation's keys are never overwritten; choose a new folder"
        )
    out = out.resolve()
    ca_cert, ca_key = make_ca(out / "ca" / "ca.crt", offline_ca_key_path(out))
    superlink = out / "superlink"
    make_server_cert(superlink / "server.crt", superlink / "server.key", ca_cert, ca_key, [host])
    shutil.copyfile(out / "ca" / "ca.crt", superlink / "ca.crt")
    (superlink / "nginx-fleet.conf").write_text(
        render_nginx(
            public_port,
            f"127.0.0.1:{superlink_port}",
            superlink / "server.crt",
            superlink / "server.key",
            superlink / "ca.crt",
            superlink / "nginx",
        )
    )
    (out / "signing").mkdir(parents=True)
    generate_signing_key(out / "signing" / "model-signing.pem", out / "signing" / "model-signing.pub")
    for i in range(sites):
        bundle = out / "sites" / f"site_{i:02d}"
        bundle.mkdir(parents=True)
        make_auth_key(bundle / "auth_key", bundle / "auth_key.pub", f"privdiff-site_{i:02d}")
        shutil.copyfile(out / "ca" / "ca.crt", bundle / "ca.crt")
        shutil.copyfile(out / "signing" / "model-signing.pub", bundle / "federation-public.pem")
    (out / "flwr-home").mkdir()
    (out / "flwr-home" / "config.toml").write_text(
        _flwr_config(f"127.0.0.1:{superlink_port}", superlink / "ca.crt")
    )
    text = commands(out, sites, host, public_port, superlink_port, config)
    (out / "COMMANDS.md").write_text(text)
    return text


def run(args: argparse.Namespace) -> int:
    text = init(args.out, args.sites, args.superlink_host, args.public_port, args.superlink_port, args.config)
    sys.stdout.write(text)
    return 0
