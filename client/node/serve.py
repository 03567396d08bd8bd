"""`privdiff-client serve`: the site's DICOM node (see `privdiff.client.node` for how its parts fit)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from privdiff_core.errors import PrivdiffError
from privdiff_core.logs import logger

HELP = "run a DICOM node: receive from the PACS, release each quiet study, forward it to the research archive"

STATUS_FILE = "status.json"
STATUS_FORMAT = "privdiff-node-status/1"

EPILOG = """\
what it does
  Listens as a DICOM storage SCP (C-STORE of CR, DX and Secondary Capture in the usual transfer
  syntaxes, JPEG and RLE included; C-ECHO) for the calling AE titles of --allow-ae only. Each
  instance is written to NODE/spool and recorded in NODE/queue.sqlite before the sender gets its
  success; "out of resources" (A700) when a bound (--max-spool-mb, --min-free-mb, --max-waiting)
  would be crossed. A study with no new instance for --quiet-time seconds goes through exactly
  `privdiff-client release` (signature check first, de-identification, anonymization, residual-risk
  check, quarantine, audit trail in NODE/release/audit.sqlite); its released files are sent to
  --destination with C-STORE, retried with backoff while the archive is down, then deleted here.
  Refused, quarantined and failed instances stay on site, with their reason in the queue.

  Stop it with Ctrl-C or SIGTERM. Killed at any point (kill -9, power cut), it resumes when started
  again on the same --node-dir: every instance answered with success is released and forwarded once.

pointing a PACS at it
  Add a DICOM destination (a "remote AE") in the PACS: AE title --ae-title, the node's host name
  and --port, and add the PACS's own AE title to --allow-ae. Test it with the PACS's echo button or
  `echoscu -aet PACS_AE NODE_HOST 11112 -aec PRIVDIFF`. See docs/dicom-node.md.

status
  `privdiff-client serve --node-dir NODE --status` prints the counts as JSON (received, pending,
  released, quarantined, refused, failed, forwarded, forward_pending, ...); the running node also
  keeps NODE/status.json up to date.

exit status
  0  stopped by Ctrl-C / SIGTERM (or --status printed)
  2  not started: bad arguments, model signature, node folder in use, port taken
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--node-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="the node's folder: spool, queue, release folder and status (created; reuse it to resume)",
    )
    parser.add_argument("--status", action="store_true", help="print the node's status as JSON and exit")
    node = parser.add_argument_group("network")
    node.add_argument("--ae-title", default="PRIVDIFF", help="this node's AE title (default PRIVDIFF)")
    node.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)"
    )
    node.add_argument("--port", type=int, default=11112, help="port to listen on (default 11112)")
    node.add_argument(
        "--allow-ae",
        nargs="+",
        default=[],
        metavar="AE",
        help="calling AE titles allowed to send (the PACS, the modalities); others are rejected",
    )
    node.add_argument(
        "--destination",
        metavar="AE@HOST:PORT",
        help="the research archive that receives the released files (a storage SCP)",
    )
    node.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve DICOM TLS with this certificate")
    node.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    node.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="with --tls-cert: senders must present a certificate signed by this CA; "
        "with --destination-tls: the CA that signed the archive's certificate",
    )
    node.add_argument(
        "--destination-tls", action="store_true", help="forward over DICOM TLS (checked against --tls-ca)"
    )
    timing = parser.add_argument_group("queue")
    timing.add_argument(
        "--quiet-time",
        type=float,
        default=60.0,
        metavar="S",
        help="release a study once no instance of it arrived for S seconds (default 60)",
    )
    timing.add_argument(
        "--max-spool-mb", type=float, default=50_000, help="bytes kept on site at most (default 50000 MB)"
    )
    timing.add_argument(
        "--min-free-mb", type=float, default=2_000, help="free disk space always left (default 2000 MB)"
    )
    timing.add_argument(
        "--max-waiting",
        type=int,
        default=100_000,
        help="instances waiting for a release at most (default 100000)",
    )
    timing.add_argument(
        "--retry-max",
        type=float,
        default=300.0,
        metavar="S",
        help="longest wait between forward retries (default 300 s)",
    )
    release = parser.add_argument_group("release (as in `privdiff-client release`)")
    release.add_argument("--model", type=Path, metavar="DIR", help="the anonymizer folder")
    trust = release.add_mutually_exclusive_group()
    trust.add_argument("--public-key", type=Path, metavar="KEY", help="the federation's public key (PEM)")
    trust.add_argument("--allow-unsigned", action="store_true", help="use an unsigned model (testing only)")
    release.add_argument(
        "--site-secret", type=Path, metavar="FILE", help="the site secret (default: the release's default)"
    )
    release.add_argument("--quarantine-threshold", type=float, default=0.5, metavar="T", help="(default 0.5)")
    release.add_argument(
        "--verifier",
        type=Path,
        metavar="DIR",
        help="the site's own patient verifier (default: $PRIVDIFF_HOME/verifier, from "
        "`privdiff-client train-verifier`)",
    )
    release.add_argument(
        "--own-verifier",
        action="store_true",
        help="without a site verifier, let the anonymizer's own verifier judge (weaker; recorded)",
    )
    release.add_argument(
        "--gallery", type=Path, metavar="DIR", help="the site's own films: outputs matching one are held back"
    )
    release.add_argument("--no-residual-check", action="store_true", help="skip the residual-risk check")
    release.add_argument(
        "--clean-burned-in",
        action="store_true",
        help="also release films whose header says text is burned in (the OCR check decides)",
    )
    release.add_argument(
        "--no-text-check", action="store_true", help="skip the OCR check (then no Clean Pixel Data claim)"
    )
    release.add_argument("--batch-size", type=int, metavar="B", help="images per anonymizer batch")
    release.add_argument("--workers", type=int, default=2, help="reader processes (default 2)")
    release.add_argument("--threads", type=int, metavar="N", help="CPU threads for the model")
    release.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    release.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")


class NodeError(PrivdiffError):
    """The node cannot start: arguments, node folder, port."""


log = logger("serve")


def status_record(queue) -> dict:
    return {
        "format": STATUS_FORMAT,
        "counts": queue.counts(),
        "held_on_site": queue.held(),
        "last_forward_error": queue.last_forward_error(),
    }


def _print_status(node_dir: Path) -> int:
    from privdiff.client.node.queue import QUEUE_FILE, NodeQueue

    if not (node_dir / QUEUE_FILE).is_file():
        raise NodeError(f"--node-dir {node_dir}: no node has run in this folder")
    queue = NodeQueue(node_dir)
    try:
        print(json.dumps(status_record(queue), indent=2, sort_keys=True))
    finally:
        queue.close()
    return 0


def _check(args: argparse.Namespace) -> None:
    missing = [name for name in ("model", "destination") if getattr(args, name) is None]
    if not args.allow_ae:
        missing.append("allow_ae")
    if missing:
        raise NodeError("missing " + ", ".join("--" + name.replace("_", "-") for name in missing))
    if not 0 < args.port < 65536:
        raise NodeError(f"--port must be 1-65535, got {args.port}")
    if args.quiet_time < 0:
        raise NodeError(f"--quiet-time must be >= 0, got {args.quiet_time}")
    if not 0.0 <= args.quarantine_threshold <= 1.0:
        raise NodeError(f"--quarantine-threshold must be in [0, 1], got {args.quarantine_threshold}")
    if args.workers < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise NodeError("--workers and --batch-size must be at least 1")
    if min(args.max_spool_mb, args.min_free_mb, args.max_waiting, args.retry_max) < 0:
        raise NodeError("--max-spool-mb, --min-free-mb, --max-waiting and --retry-max must be >= 0")
    from privdiff.client.node.forwarder import Destination

    try:
        Destination.parse(args.destination)
    except ValueError as err:
        raise NodeError(str(err)) from err
    if (args.tls_cert is None) != (args.tls_key is None):
        raise NodeError("--tls-cert and --tls-key go together")
    for title in (args.ae_title, *args.allow_ae):
        if not 0 < len(title) <= 16 or "\\" in title or not title.isprintable():
            raise NodeError(f"AE title {title!r}: 1-16 printable characters, no backslash")


def _site_secret_path(path: Path | None) -> Path:
    """The release's secret file, created now if the default one does not exist yet."""
    from privdiff.client.deid import create_site_secret, default_secret_path

    if path is not None:
        return path
    path = default_secret_path()
    if not path.exists():
        create_site_secret(path)
        log.info(f"created a new site secret at {path} (mode 0600); keep it and back it up")
    return path


@contextlib.contextmanager
def _node_lock(node_dir: Path):
    """One node per folder: a second one would release and forward the same queue."""
    node_dir.mkdir(parents=True, exist_ok=True)
    with open(node_dir / "node.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise NodeError(f"--node-dir {node_dir}: another node is running on this folder") from err
        yield


def _loop(step: Callable[[], bool], stop: threading.Event, name: str) -> threading.Thread:
    """Run `step` until `stop`, at once again after useful work, after a short pause otherwise."""

    def run() -> None:
        while not stop.is_set():
            try:
                busy = step()
            except Exception as err:  # noqa: BLE001 -- a thread that dies silently loses the node's work
                # File and database errors name node paths (salted hashes); any other text could
                # quote a header value, so only its kind is said.
                detail = f": {err}" if isinstance(err, OSError | sqlite3.Error) else ""
                log.warning(f"{name}: {type(err).__name__}{detail}; retrying")
                busy = False
                stop.wait(5.0)
            if not busy:
                stop.wait(0.25)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def run(args: argparse.Namespace) -> int:
    if args.status:
        return _print_status(args.node_dir)
    _check(args)
    from privdiff.client.model_trust import establish_trust
    from privdiff.client.readers import silence_dicom_libraries

    # The signature first: a node with a model it cannot trust must not accept a single image.
    trust = establish_trust(args.model, args.public_key, args.allow_unsigned)
    if not args.no_residual_check:  # ... and a verifier to judge with, before any image arrives
        from privdiff.client.residual_risk import choose_verifier

        choose_verifier(args.verifier, args.own_verifier)
    if not trust.signed:
        log.warning("UNSIGNED MODEL (--allow-unsigned): every release records it as UNSIGNED")
    silence_dicom_libraries()  # the node reads headers; pydicom's messages may quote them
    with _node_lock(args.node_dir):
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from privdiff.client.deid import load_site_secret
    from privdiff.client.node.forwarder import Destination, Forwarder, client_tls
    from privdiff.client.node.queue import NodeQueue
    from privdiff.client.node.releaser import RELEASE_DIR, Releaser
    from privdiff.client.node.scp import ScpSettings, server_tls, start_scp
    from privdiff.client.node.spool import Spool, SpoolLimits
    from privdiff.client.outputs import write_atomically
    from privdiff.client.release_pipeline import ReleaseSettings

    try:
        destination = Destination.parse(
            args.destination, client_tls(args.tls_ca, None, None) if args.destination_tls else None
        )
        tls = server_tls(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    except (ValueError, OSError) as err:
        raise NodeError(str(err)) from err
    secret_path = _site_secret_path(args.site_secret)
    secret = load_site_secret(secret_path)
    node_dir = args.node_dir.resolve()
    queue = NodeQueue(node_dir)
    mb = 1024 * 1024
    limits = SpoolLimits(int(args.max_spool_mb * mb), int(args.min_free_mb * mb), args.max_waiting)
    spool = Spool(node_dir / "spool", queue, secret, limits)
    removed = spool.sweep()
    if removed:
        log.info(f"removed {removed} spool file(s) an interrupted node had not committed")
    # The release's own options, under the names `privdiff-client release` gives them.
    same_as_release = ("model", "public_key", "allow_unsigned", "quarantine_threshold", "verifier", "gallery")
    same_as_release += ("own_verifier",)
    same_as_release += ("batch_size", "workers", "device", "seed")
    settings = ReleaseSettings(
        source=node_dir,  # replaced by each batch's folder
        out=node_dir / RELEASE_DIR,
        site_secret=secret_path,
        residual_check=not args.no_residual_check,
        clean_burned_in=args.clean_burned_in,
        text_check=not args.no_text_check,
        progress=False,
        **{name: getattr(args, name) for name in same_as_release},
    )
    releaser = Releaser(node_dir, queue, spool, settings, args.quiet_time, args.threads, log.info)
    releaser.sweep()
    queue.reopen_waiting_studies(time.time())
    forwarder = Forwarder(
        queue, node_dir / RELEASE_DIR, destination, args.ae_title, log.info, max_delay=args.retry_max
    )
    try:
        server = start_scp(
            ScpSettings(args.ae_title, args.host, args.port, tuple(args.allow_ae), tls), spool, queue
        )
    except OSError as err:
        queue.close()
        raise NodeError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from err
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [_loop(releaser.step, stop, "releaser"), _loop(forwarder.step, stop, "forwarder")]
    log.info(
        f"listening as {args.ae_title} on {args.host}:{args.port}{' (TLS)' if tls else ''} for "
        f"{', '.join(args.allow_ae)}; forwarding to {args.destination}; quiet time {args.quiet_time:g} s"
    )
    last = None
    try:
        while not stop.wait(1.0):
            record = status_record(queue)
            if record != last:
                write_atomically(
                    node_dir / STATUS_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
                )
                last = record
    finally:
        server.shutdown()
        releaser.stop()
        for thread in threads:
            thread.join(timeout=30)
        write_atomically(
            node_dir / STATUS_FILE,
            (json.dumps(status_record(queue), indent=2, sort_keys=True) + "\n").encode(),
        )
        queue.close()
    log.info("stopped; start it again on the same --node-dir to resume")
    return 0
