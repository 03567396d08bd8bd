"""`privdiff-client start`: join the federation by running Flower's SuperNode for this site.

The SuperNode connects out to the SuperLink over TLS (nothing listens for the outside world at
the site), authenticates with the site's key, and runs privdiff's ClientApp for each message the
server sends. This command assembles its command line and environment:

- `--node-config` with the site's local facts (data folder, model store, the federation's public
  key, the data cache, and require-secagg: the site refuses to send unmasked updates), as TOML
  literal strings with absolute paths (the ClientApp runs in another process and folder);
- PATH starting with this Python environment's `bin`, where the SuperNode finds
  `flower-superexec` and `flwr-clientapp`;
- telemetry and update checks off;

Before that it checks what it was given (client/preflight.py): the CA file is a certificate
that verifies the server's, the site key and the federation key are what they claim, the runtime
port is free and the data folder is a layout privdiff reads. A wrong input ends the command
within seconds with one line naming the file or flag to fix, never a traceback or a hang.

Then it runs the SuperNode as a child process, forwards Ctrl-C / SIGTERM to it (and to the
processes it started), passes its output through `privdiff.client.site_log.SiteLog` (no colour codes, no
empty lines, privdiff's own events, `--log FILE` with timestamps), and exits with its status;
a Flower failure it recognises (an unregistered key: code 2004, a TLS failure, ...) ends with one
line of advice and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from privdiff_core.logs import logger

HELP = "join the federation: run Flower's SuperNode for this site (TLS, site key, local data)"

EPILOG = """\
example (the bundle sites/site_00 comes from `privdiff federation init` on the server):
  privdiff-client start --superlink fl.hospital-a.org:9092 --data /data/cxr \\
      --root-certificates site_00/ca.crt --auth-key site_00/auth_key \\
      --public-key site_00/federation-public.pem --model-store /srv/privdiff/model-store

Only the model update of each round leaves the site, masked by SecAgg+; the images, labels and
patient identities stay in --data. The finished anonymizer arrives signed, is verified with
--public-key and installed in --model-store (MODEL_STORE/current).
"""

ENVIRONMENT = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--superlink", required=True, metavar="HOST:PORT", help="the federation server's address"
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="this site's data folder (Contract 1 site folder)"
    )
    parser.add_argument(
        "--root-certificates",
        type=Path,
        metavar="CA",
        help="the federation CA certificate (ca.crt) the server's TLS certificate is checked with",
    )
    parser.add_argument(
        "--auth-key", type=Path, metavar="KEY", help="this site's private key (auth_key, OpenSSH)"
    )
    parser.add_argument(
        "--model-store",
        type=Path,
        help="where received anonymizers are installed (default: DATA/../privdiff-model-store)",
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        metavar="PUB",
        help="the federation's model-signing public key (federation-public.pem)",
    )
    parser.add_argument("--cache-dir", type=Path, help="decoded-image cache (default: MODEL_STORE/cache)")
    parser.add_argument(
        "--verifier",
        type=Path,
        metavar="DIR",
        help="this site's own verifier and findings classifier, which score a candidate model before "
        "the federation signs it (default: $PRIVDIFF_HOME/verifier; trained there from --data when "
        "missing, see `privdiff-client train-verifier`)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=9094,
        help="local port of the SuperNode's runtime API on 127.0.0.1; each site on one host needs "
        "its own (default 9094)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="also append the site's log to FILE (timestamped, no colour codes)",
    )
    parser.add_argument(
        "--allow-unmasked-updates",
        action="store_true",
        help="also answer rounds without secure aggregation (comparison runs only)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no site key: ONLY for a local test SuperLink started with --insecure",
    )


def toml_string(value: str) -> str:
    """A TOML string Flower's --node-config parser reads back unchanged."""
    if "'" not in value:
        return f"'{value}'"  # literal string: backslashes stay as they are
    if '"' not in value:
        return '"' + value.replace("\\", "\\\\") + '"'
    raise ValueError(f"a path with both ' and \" cannot be passed to the SuperNode: {value}")


def node_config(
    data: Path,
    model_store: Path,
    public_key: Path | None,
    cache_dir: Path,
    require_secagg: bool,
    verifier: Path | None = None,
) -> str:
    """The --node-config string the ClientApp reads (client/client_app.py, NodeConfigSites)."""
    from privdiff.client.client_app import (
        NODE_CACHE_DIR,
        NODE_DATA,
        NODE_MODEL_STORE,
        NODE_PUBLIC_KEY,
        NODE_REQUIRE_SECAGG,
        NODE_VERIFIER,
    )

    items = [
        (NODE_DATA, toml_string(str(data))),
        (NODE_MODEL_STORE, toml_string(str(model_store))),
        (NODE_CACHE_DIR, toml_string(str(cache_dir))),
    ]
    if public_key is not None:
        items.append((NODE_PUBLIC_KEY, toml_string(str(public_key))))
    if verifier is not None:
        items.append((NODE_VERIFIER, toml_string(str(verifier))))
    items.append((NODE_REQUIRE_SECAGG, "true" if require_secagg else "false"))
    return " ".join(f"{key}={value}" for key, value in items)


def _existing(path: Path | None, what: str, flag: str) -> Path:
    from privdiff_core.errors import PrivdiffError

    if path is None:
        raise PrivdiffError(f"{flag} is required ({what}); --insecure is only for local tests")
    if not path.exists():
        raise PrivdiffError(f"{flag} {path}: no such file or folder ({what})")
    return path.resolve()


def supernode_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The flower-supernode command line and environment for these arguments (PATH starts with
    the folder whose `flwr-clientapp` refuses any app but the installed one: client/app_trust.py)."""
    from privdiff.client.app_trust import pin_installed_app
    from privdiff_core.errors import PrivdiffError

    data = _existing(args.data, "the site's data folder", "--data")
    store = (args.model_store or data.parent / "privdiff-model-store").resolve()
    store.mkdir(parents=True, exist_ok=True)
    cache = (args.cache_dir or store / "cache").resolve()
    from privdiff.client.site_verifier import default_site_verifier

    verifier = (args.verifier or default_site_verifier()).resolve()
    public_key = (
        _existing(args.public_key, "federation public key", "--public-key") if args.public_key else None
    )
    bin_dir = Path(sys.executable).parent
    executable = bin_dir / "flower-supernode"
    if not executable.is_file():
        raise PrivdiffError(f"{executable} not found: install privdiff (and Flower) into this environment")
    command = [
        str(executable),
        "--superlink",
        args.superlink,
        "--port",
        str(args.port),
        "--node-config",
        node_config(data, store, public_key, cache, not args.allow_unmasked_updates, verifier),
    ]
    if args.insecure:
        command.append("--insecure")
    else:
        command += [
            "--root-certificates",
            str(_existing(args.root_certificates, "federation CA", "--root-certificates")),
            "--auth-supernode-private-key",
            str(_existing(args.auth_key, "site key", "--auth-key")),
        ]
    env = dict(os.environ, **ENVIRONMENT)
    env["PATH"] = os.pathsep.join([str(pin_installed_app(store)), str(bin_dir), env.get("PATH", "")])
    return command, env


def _key_name(auth_key: Path | None) -> str:
    """The comment of the site's public key beside its private key ("privdiff-site_00"), or ""."""
    public = auth_key.with_name(auth_key.name + ".pub") if auth_key else None
    if public is None or not public.is_file():
        return ""
    fields = public.read_text(errors="replace").split()
    return " ".join(fields[2:])


def preflight(args: argparse.Namespace) -> None:
    """Every check of client/preflight.py that applies to these arguments (raises PrivdiffError)."""
    from privdiff.client import preflight as check

    if args.root_certificates is not None and args.root_certificates.is_file():
        check.check_root_certificate(args.root_certificates)
    if args.auth_key is not None and args.auth_key.is_file():
        check.check_auth_key(args.auth_key)
    if args.public_key is not None and args.public_key.is_file():
        check.check_public_key(args.public_key)
    check.check_port_free(args.port)
    if not args.insecure:
        warning = check.check_server(args.superlink, args.root_certificates)
        if warning:
            logger("start").warning(warning)
    check.check_data(args.data)


def run(args: argparse.Namespace) -> int:
    from privdiff.client.site_log import SiteLog
    from privdiff_core.errors import PrivdiffError

    command, env = supernode_command(args)  # missing files and flags first
    preflight(args)
    facts = {
        "superlink": args.superlink,
        "auth_key": str(args.auth_key.resolve()) if args.auth_key else "auth_key",
        "port": str(args.port),
        "key_name": _key_name(args.auth_key),
    }
    log = SiteLog(facts, args.log)
    log.write(f"privdiff-client start: {' '.join(command)}")
    # Own session: a signal reaches the SuperNode and every process it started (superexec, ClientApps).
    child = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    # The SuperNode's children (superexec, ClientApps) share its output pipe and may outlive it
    # (superexec keeps retrying after the SuperNode gave up), so the pipe is read on a thread
    # and the SuperNode's own exit ends the command.
    reader = threading.Thread(target=lambda: [log.feed(line) for line in child.stdout], daemon=True)
    reader.start()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in (signal.SIGTERM, signal.SIGKILL):  # leave no ClientApp or superexec behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)
            reader.join(timeout=10)
            if not reader.is_alive():
                break
        log.close()
    if log.advice:
        raise PrivdiffError(log.advice)
    return status if status >= 0 else 128 - status
