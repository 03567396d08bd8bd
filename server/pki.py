"""Keys and certificates of a federation, made with `cryptography` (no openssl needed).

- a certificate authority (EC P-384) whose certificate every site trusts;
- the SuperLink's TLS certificate, signed by that CA, for localhost/127.0.0.1/::1 plus the
  SuperLink's public host name or address;
- one EC P-384 key pair per site in OpenSSH format: Flower's SuperNode authentication;
- the Ed25519 model-signing key pair (privdiff_core.signing): the anonymizer is signed with it.

Every private key file is written with mode 0600 before any byte of the key goes in.

The CA's private key is written OUTSIDE the federation folder the server runs from
(`offline_ca_key_path`): it is needed only to issue a new SuperLink certificate, so it belongs on
offline storage (an encrypted USB key in a safe, or an HSM), never on the server that faces the
sites. Whoever holds it can impersonate the server to every site.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_DAYS = 825  # the longest validity browsers and many TLS stacks still accept for a server cert
CA_DAYS = 3650


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never readable by others, not even briefly) and write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def offline_ca_key_path(federation_dir: Path) -> Path:
    """Where `privdiff federation init` writes the CA key: a sibling of the federation folder
    (`fed/` -> `fed-ca-OFFLINE/ca.key`), so copying or serving the federation folder never
    carries it along. Refuses to reuse a folder that already holds a key."""
    federation_dir = Path(federation_dir).resolve()
    path = federation_dir.parent / f"{federation_dir.name}-ca-OFFLINE" / "ca.key"
    if path.exists():
        from privdiff.common.errors import FederationError

        raise FederationError(f"{path} already exists: a CA key is never overwritten; choose a new --out")
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privdiff federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(
    cert_path: Path, key_path: Path, name: str = "privdiff federation CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    write_private(key_path, _pem_key(key))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_server_cert(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hosts: list[str],
) -> x509.Certificate:
    """A TLS server certificate for every name/address in `hosts` (deduplicated, order kept)."""
    names = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]))
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[-1] if hosts else "localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san_entry(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def make_auth_key(private_path: Path, public_path: Path, comment: str) -> None:
    """An EC P-384 key pair in OpenSSH format, what `flower-supernode --auth-supernode-private-key`
    and `flwr supernode register` take."""
    key = ec.generate_private_key(ec.SECP384R1())
    write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_path.write_bytes(public + f" {comment}\n".encode())
