"""Checks `privdiff-client start` makes before it starts Flower's SuperNode.

A SuperNode given a wrong file does not say so: a key passed as the CA prints a traceback and
then retries forever, a taken runtime port ends in "address already in use", an unregistered
site key in a bare error code. Each check here instead raises `PrivdiffError` with one line that
names the file or the flag to change, before anything connects or starts. Every network wait is
bounded (`timeout`).
"""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path

from privdiff_core.errors import PrivdiffError

BUNDLE_HINT = "your site bundle from `privdiff federation init` (sites/site_NN)"


def _pem_kind(text: str) -> str | None:
    """The first PEM block's type ("CERTIFICATE", "PUBLIC KEY", ...), or None if there is none."""
    marker = "-----BEGIN "
    start = text.find(marker)
    if start < 0:
        return None
    end = text.find("-----", start + len(marker))
    return text[start + len(marker) : end] if end > 0 else None


def check_root_certificate(path: Path) -> None:
    """`path` holds a CA certificate, not a key or something else."""
    from cryptography import x509

    text = path.read_text(errors="replace")
    kind = _pem_kind(text)
    if kind == "PUBLIC KEY":
        raise PrivdiffError(
            f"--root-certificates {path} is a public key (the model-signing key "
            "federation-public.pem?), not a certificate: pass ca.crt from "
            + BUNDLE_HINT
            + "; federation-public.pem goes to --public-key"
        )
    if (kind is not None and "PRIVATE KEY" in kind) or text.startswith("-----BEGIN OPENSSH"):
        raise PrivdiffError(
            f"--root-certificates {path} is a private key, not a certificate: pass ca.crt from " + BUNDLE_HINT
        )
    try:
        x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise PrivdiffError(
            f"--root-certificates {path} is not a PEM certificate: pass ca.crt from " + BUNDLE_HINT
        ) from None


def check_auth_key(path: Path) -> None:
    """`path` is the site's OpenSSH EC private key (Flower's SuperNode authentication)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = path.read_bytes()
    if data.startswith(b"ecdsa-sha2-") or data.startswith(b"ssh-"):
        raise PrivdiffError(
            f"--auth-key {path} is a public key: pass the private key auth_key (not auth_key.pub) "
            "from " + BUNDLE_HINT
        )
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PrivdiffError(
            f"--auth-key {path} is not an unencrypted OpenSSH private key: pass auth_key from " + BUNDLE_HINT
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PrivdiffError(f"--auth-key {path}: Flower needs an elliptic-curve (EC P-384) site key")


def check_public_key(path: Path) -> str:
    """`path` is the federation's Ed25519 model-signing public key; returns its key id."""
    from privdiff_core.signing import SignatureError, key_id, load_public_key

    try:
        return key_id(load_public_key(path))
    except SignatureError:
        raise PrivdiffError(
            f"--public-key {path} is not the federation's Ed25519 public key: pass "
            "federation-public.pem from " + BUNDLE_HINT
        ) from None


def check_port_free(port: int) -> None:
    """The SuperNode's runtime port on 127.0.0.1 is free (a second site on one host needs its own)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise PrivdiffError(
                    f"--port {port}: cannot listen on 127.0.0.1:{port} ({err.strerror})"
                ) from None
            raise PrivdiffError(
                f"--port {port} is already in use on this host (another site's SuperNode?): give "
                f"each site its own port, e.g. --port {_free_port_after(port)}"
            ) from None


def _free_port_after(port: int) -> int:
    for candidate in range(port + 1, min(port + 100, 65536)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    return port + 1


def split_address(superlink: str) -> tuple[str, int]:
    host, sep, port = superlink.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PrivdiffError(f"--superlink {superlink}: expected HOST:PORT, e.g. fl.hospital-a.org:9092")
    return host.strip("[]"), int(port)


def check_server(superlink: str, ca: Path, timeout: float = 10.0) -> str | None:
    """Open one TLS connection to the server and check its certificate with `ca`.

    Raises for what a retry cannot fix (a certificate from another CA or for another name, a
    server that does not speak TLS, an unknown host name). Returns a warning if the server is
    not reachable yet (refused, timed out): the SuperNode keeps trying, which is what a site
    started before its server wants.
    """
    host, port = split_address(superlink)
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as err:
        if "hostname" in str(err.verify_message) or "IP address mismatch" in str(err.verify_message):
            raise PrivdiffError(
                f"the server's TLS certificate is not valid for {host!r}: use in --superlink the name "
                "given to `privdiff federation init --superlink-host`"
            ) from None
        raise PrivdiffError(
            f"the server at {superlink} has a TLS certificate not signed by --root-certificates {ca} "
            f"({err.verify_message}): use ca.crt from the bundle of this federation"
        ) from None
    except ssl.SSLError as err:
        raise PrivdiffError(
            f"{superlink} does not answer TLS ({err.reason}): is it nginx's public port from "
            "COMMANDS.md (not a plaintext port)?"
        ) from None
    except socket.gaierror:
        raise PrivdiffError(f"--superlink {superlink}: unknown host name {host!r}") from None
    except OSError as err:
        return (
            f"the server {superlink} is not reachable yet ({err.strerror or err}); the SuperNode keeps "
            "trying: is nginx running there, and does the firewall let this host through?"
        )


def check_data(path: Path) -> str:
    """`path` is a data folder privdiff can train on; returns its layout name."""
    from privdiff_core.data.errors import DatasetError
    from privdiff_core.data.layouts import detect_layout, site_folders

    hint = (
        "A site folder is labels.csv + images/<PatientID>/*.dcm (docs/architecture.md, Contract 1); "
        "for a trial make one with `privdiff synth --out DIR`"
    )
    try:
        layout = detect_layout(path)
    except DatasetError as err:
        raise PrivdiffError(f"--data: {err}. {hint}") from None
    if layout == "federation":  # every site's data in one folder: a site trains on its own only
        first = site_folders(path)[0]
        raise PrivdiffError(
            f"--data {path} holds {len(site_folders(path))} sites' folders: give this site its own, "
            f"e.g. --data {first}"
        )
    return layout
