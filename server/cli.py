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

With the default --superlink-host localhost the kit is a one-host trial: nginx listens on
127.0.0.1, the sites' data is made by `privdiff synth` under fed/data/, and each site gets its
own runtime port and model store under fed/sites/site_NN/. With a real host name the site
commands use the folder each bundle is copied to at its hospital (--site-home).

`privdiff federation nodes` lists the registered sites with the names given at registration
(Flower's `flwr supernode list` shows only node ids).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from privdiff_core.logs import add_logging_arguments, logger

HELP = "set up a real federation (CA, TLS, site keys, signing key, commands); list its sites"

SUPERLINK_PORT = 9091  # the SuperLink itself, on loopback only (its Control API is unauthenticated)
PUBLIC_PORT = 9092  # nginx: the Fleet API only, what the sites connect to
SITE_PORT = 9094  # the first site's SuperNode runtime port (Flower's default); site NN gets +NN
CONNECTION = "privdiff"  # name of the operator's SuperLink connection in flwr-home/config.toml
LOOPBACK = ("localhost", "127.0.0.1", "::1")
SITE_HOME = Path("/opt/privdiff")  # where a hospital puts its bundle, unless --site-home says otherwise
ENV = "FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1"


@dataclass(frozen=True)
class Kit:
    """What `federation init` was asked for: every command in COMMANDS.md follows from it."""

    out: Path  # init() makes it absolute
    sites: int
    host: str = "localhost"
    public_port: int = PUBLIC_PORT
    superlink_port: int = SUPERLINK_PORT
    config: str = "demo"
    bind: str | None = None  # nginx's listen address; None: 127.0.0.1 for a trial, else every interface
    site_home: Path = SITE_HOME
    first_site_port: int = SITE_PORT

    @property
    def trial(self) -> bool:
        """Everything on this one host: the sites' data, stores and ports live side by side."""
        return self.host in LOOPBACK

    @property
    def listen(self) -> str:
        return self.bind or ("127.0.0.1" if self.trial else "*")

    def bundle(self, i: int) -> Path:
        """Site i's bundle where its SuperNode reads it: here for a trial, else at its hospital."""
        return (self.out / "sites" if self.trial else self.site_home) / site_name(i)

    def site_data(self, i: int) -> Path:
        return self.out / "data" / site_name(i) if self.trial else self.bundle(i) / "data"

    def runtime_port(self, i: int) -> int:
        # one host, many SuperNodes: each needs its own runtime port (9094 is Flower's default)
        return self.first_site_port + i if self.trial else self.first_site_port


def site_name(i: int) -> str:
    return f"site_{i:02d}"


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
        help="name or address the sites use to reach the server (in the TLS certificate); "
        "localhost (default) makes a one-host trial",
    )
    init.add_argument(
        "--bind",
        metavar="ADDRESS",
        help="address nginx listens on for the sites: one IP address, or * for every interface "
        "(default: 127.0.0.1 for a one-host trial, else *)",
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
    init.add_argument(
        "--site-port",
        type=int,
        default=SITE_PORT,
        help=f"a site's local SuperNode runtime port; in a one-host trial site NN gets +NN "
        f"(default {SITE_PORT})",
    )
    init.add_argument(
        "--site-home",
        type=Path,
        default=SITE_HOME,
        help=f"where each hospital puts its bundle sites/site_NN (real hosts only; default {SITE_HOME})",
    )
    init.add_argument("--config", default="demo", help="privdiff config the run will use (default demo)")
    nodes = sub.add_parser(
        "nodes",
        help="list the registered sites: node id, the name given at registration, status",
        description="List the sites registered with the SuperLink, with the names given to "
        "`flwr supernode register --name` (which `flwr supernode list` does not show). Run it on "
        "the server with FLWR_HOME set to the federation's flwr-home.",
    )
    nodes.add_argument(
        "--connection",
        default=CONNECTION,
        help=f"connection name in $FLWR_HOME/config.toml (default {CONNECTION})",
    )
    nodes.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    for action in (init, nodes):  # also after the action: `federation init ... --log-file F`
        add_logging_arguments(action, nested=True)


def _flwr_config(address: str, ca: Path) -> str:
    return (
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\nroot-certificates = "{ca}"\n'
    )


def _double_quoted(text: str) -> str:
    """ "text" for the shell when nothing in it is special inside double quotes, else shlex."""
    return f'"{text}"' if not any(c in text for c in '"$`\\!') else shlex.quote(text)


def _nginx_executable() -> str:
    """nginx by its absolute path: Debian puts it in /usr/sbin, which a user's PATH often lacks."""
    return shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")) or "nginx"


def _app_folder() -> str:
    """The privdiff checkout `flwr run` packages (the folder with pyproject.toml), if this is one."""
    root = Path(__file__).resolve().parents[1]
    return str(root) if (root / "pyproject.toml").is_file() else "."


def _data_step(kit: Kit) -> list[str]:
    q = shlex.quote
    if kit.trial:
        return [
            "## 0. The sites' data: a synthetic federation for this trial",
            "",
            "One site folder per hospital (DICOM films with patient headers, labels.csv with findings",
            "and the train/val/test split), made in seconds:",
            "",
            "```bash",
            f"privdiff synth --config {q(kit.config)} --sites {kit.sites} --out {q(str(kit.out / 'data'))}",
            "```",
            "",
        ]
    return [
        "## 0. Each site: its data, in the site layout",
        "",
        "`--data` is a site folder: `labels.csv` (file, split, the 14 findings) and",
        "`images/<PatientID>/*.dcm` (docs/architecture.md, Contract 1), or a ChestX-ray14 or CheXpert",
        f"folder. The commands below expect it at `{kit.site_home}/site_NN/data`; point `--data`",
        "elsewhere if it lives elsewhere. `privdiff synth --out DIR` writes synthetic site folders.",
        "",
    ]


def commands(kit: Kit) -> str:
    """COMMANDS.md: what to run, where, in order (absolute paths only)."""
    q = shlex.quote
    out, sl = kit.out, kit.out / "superlink"
    flwr_home = f"export FLWR_HOME={q(str(out / 'flwr-home'))}"
    where = "this host" if kit.trial else "the hospital"
    lines = [
        "# privdiff federation: commands",
        "",
        f"Made by `privdiff federation init` for {kit.sites} sites"
        + (" on this one host (a trial)." if kit.trial else f", server {kit.host}."),
        "Run each long-running step (1, 2, 4) in its own terminal. Background and the security",
        "model: docs/deployment.md.",
    ]
    if not kit.trial:
        lines += [
            "",
            f"Copy each bundle `{out / 'sites'}/site_NN` to `{kit.site_home}/site_NN` on its hospital's",
            "host (only that site's folder, never `ca/` or `signing/`).",
        ]
    lines += ["", *_data_step(kit)]
    lines += [
        "## 1. Server: the SuperLink, on loopback only",
        "",
        "Its Control API (submit runs, register sites) shares the port with the Fleet API and is not",
        "authenticated in open-source Flower 1.42, so it must not be reachable from the network.",
        "",
        "```bash",
        f"{ENV} \\\n  flower-superlink --host 127.0.0.1 --port {kit.superlink_port} \\\n"
        f"  --ssl-ca-certfile {q(str(sl / 'ca.crt'))} --ssl-certfile {q(str(sl / 'server.crt'))} "
        f"--ssl-keyfile {q(str(sl / 'server.key'))} \\\n"
        f"  --enable-supernode-auth --disable-runtime-dependency-installation "
        f"--database {q(str(sl / 'state.db'))}",
        "```",
        "",
        f"## 2. Server: nginx on {kit.listen}:{kit.public_port}, exposing only the Fleet API to the sites",
        "",
        "```bash",
        f"mkdir -p {q(str(sl / 'nginx'))} && {_nginx_executable()} -p {q(str(sl / 'nginx'))} "
        f"-c {q(str(sl / 'nginx-fleet.conf'))} -e stderr -g 'daemon off;'",
        "```",
        "",
        "## 3. Server: register every site's key (the operator's `flwr`, connection in flwr-home)",
        "",
        "```bash",
        flwr_home,
    ]
    lines += [
        f"flwr supernode register {q(str(out / 'sites' / site_name(i) / 'auth_key.pub'))} {CONNECTION} "
        f"--name {site_name(i)}"
        for i in range(kit.sites)
    ]
    lines += [
        "privdiff federation nodes   # node id -> site name, online or not",
        "```",
        "",
        f"## 4. Each site: its SuperNode ({where}; one terminal per site)",
        "",
        "```bash",
    ]
    for i in range(kit.sites):
        bundle = kit.bundle(i)
        lines.append(
            f"privdiff-client start --superlink {kit.host}:{kit.public_port} "
            f"--data {q(str(kit.site_data(i)))} --port {kit.runtime_port(i)} \\\n"
            f"  --root-certificates {q(str(bundle / 'ca.crt'))} --auth-key {q(str(bundle / 'auth_key'))} \\\n"
            f"  --public-key {q(str(bundle / 'federation-public.pem'))} \\\n"
            f"  --model-store {q(str(bundle / 'model-store'))} --log {q(str(bundle / 'site.log'))} \\\n"
            f"  --verifier {q(str(bundle / 'verifier'))}"
        )
    overrides = f"federation.min_sites={kit.sites} federation.sites={kit.sites}"
    run_config = (
        f"config='{kit.config}' signing-key='{out / 'signing' / 'model-signing.pem'}' "
        f"out='{out / 'runs' / kit.config}' overrides='{overrides}'"
    )
    lines += [
        "```",
        "",
        "## 5. Server: submit the federated run",
        "",
        f"`overrides` sets `federation.min_sites` to the {kit.sites} sites of this kit (the config's",
        "own value may differ); the run waits for them, trains, signs and installs the anonymizer.",
        "",
        "```bash",
        flwr_home,
        f"flwr run {q(_app_folder())} {CONNECTION} --run-config {_double_quoted(run_config)} --stream",
        "```",
        "",
        f"The signed anonymizer lands in {out / 'runs' / kit.config / 'anonymizer'} and in every site's",
        "model store (`MODEL_STORE/current`); `privdiff-client verify` checks it again at the site.",
        "",
    ]
    return "\n".join(lines)


def init(kit: Kit) -> str:
    """Write everything listed in the module doc; returns COMMANDS.md's text."""
    from privdiff.common.errors import FederationError
    from privdiff.server.nginx import render_nginx
    from privdiff.server.pki import make_auth_key, make_ca, make_server_cert, offline_ca_key_path
    from privdiff_core.signing import generate_signing_key

    if kit.sites < 1:
        raise FederationError("--sites must be at least 1")
    if kit.out.exists() and any(kit.out.iterdir()):
        raise FederationError(
            f"{kit.out} is not empty: a federation's keys are never overwritten; choose a new folder"
        )
    out = kit.out.resolve()
    kit = replace(kit, out=out)
    ca_cert, ca_key = make_ca(out / "ca" / "ca.crt", offline_ca_key_path(out))
    superlink = out / "superlink"
    make_server_cert(superlink / "server.crt", superlink / "server.key", ca_cert, ca_key, [kit.host])
    shutil.copyfile(out / "ca" / "ca.crt", superlink / "ca.crt")
    (superlink / "nginx-fleet.conf").write_text(
        render_nginx(
            kit.listen,
            kit.public_port,
            f"127.0.0.1:{kit.superlink_port}",
            superlink / "server.crt",
            superlink / "server.key",
            superlink / "ca.crt",
            superlink / "nginx",
            out / "flwr-home",
        )
    )
    (out / "signing").mkdir(parents=True)
    generate_signing_key(out / "signing" / "model-signing.pem", out / "signing" / "model-signing.pub")
    for i in range(kit.sites):
        bundle = out / "sites" / site_name(i)
        bundle.mkdir(parents=True)
        make_auth_key(bundle / "auth_key", bundle / "auth_key.pub", f"privdiff-{site_name(i)}")
        shutil.copyfile(out / "ca" / "ca.crt", bundle / "ca.crt")
        shutil.copyfile(out / "signing" / "model-signing.pub", bundle / "federation-public.pem")
    (out / "flwr-home").mkdir()
    (out / "flwr-home" / "config.toml").write_text(
        _flwr_config(f"127.0.0.1:{kit.superlink_port}", superlink / "ca.crt")
    )
    text = commands(kit)
    (out / "COMMANDS.md").write_text(text)
    return text


def run(args: argparse.Namespace) -> int:
    if args.federation_command == "nodes":
        from privdiff.server.nodes import print_nodes

        return print_nodes(args.connection, as_json=args.json)
    kit = Kit(
        out=args.out,
        sites=args.sites,
        host=args.superlink_host,
        public_port=args.public_port,
        superlink_port=args.superlink_port,
        config=args.config,
        bind=args.bind,
        site_home=args.site_home,
        first_site_port=args.site_port,
    )
    text = init(kit)
    logger("federation").info(
        f"federation kit for {kit.sites} site(s) written to {args.out.resolve()}; the commands follow "
        "(also in COMMANDS.md)"
    )
    sys.stdout.write(text)
    return 0
