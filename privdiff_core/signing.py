"""Signed anonymizer folders (Ed25519, from `cryptography`).

The federation signs the finished anonymizer; every site verifies it before using it. The
signature covers a payload listing the SHA-256 of every file in the folder plus metadata
(config, rounds, ...), so a changed, added or removed file breaks verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privdiff_core.errors import PrivdiffError

SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = "privdiff-signature/1"


class SignatureError(PrivdiffError):
    """The model folder is unsigned, tampered with, or signed by another key."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_hashes(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` (POSIX relative paths), the signature file excluded."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != SIGNATURE_FILE
    }


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair as PEM (private key file mode 0600); returns its key id."""
    private_key = Ed25519PrivateKey.generate()
    private_path, public_path = Path(private_path), Path(public_path)
    private_path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(private_key.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise SignatureError(f"{path}: not a readable PEM private key ({err})") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: the model-signing key must be Ed25519")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as err:
        raise SignatureError(f"{path}: not a readable PEM public key ({err})") from err
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: the model-signing key must be Ed25519")
    return key


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign_model(
    folder: str | Path, private_key: Ed25519PrivateKey, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Sign every file of `folder`; writes `signature.json` atomically and returns its payload."""
    folder = Path(folder)
    payload = {
        "format": SIGNATURE_FORMAT,
        "key_id": key_id(private_key.public_key()),
        "files": folder_hashes(folder),
        "metadata": metadata or {},
    }
    record = {
        "payload": payload,
        "signature": base64.b64encode(private_key.sign(_canonical(payload))).decode(),
    }
    tmp = folder / (SIGNATURE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(folder / SIGNATURE_FILE)
    return payload


def verify_model(folder: str | Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check the folder's signature and every file hash; returns the signed payload.

    Raises SignatureError naming what failed (no signature, other key, bad signature, or the
    file that was changed, added or removed).
    """
    folder = Path(folder)
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        raise SignatureError(f"{folder}: no {SIGNATURE_FILE}: the model is not signed")
    try:
        record = json.loads(path.read_text())
        payload, signature = record["payload"], base64.b64decode(record["signature"])
    except (ValueError, KeyError, TypeError) as err:
        raise SignatureError(f"{path}: malformed signature file ({err})") from err
    expected_id = key_id(public_key)
    if payload.get("key_id") != expected_id:
        raise SignatureError(
            f"{folder}: signed by key {payload.get('key_id')}, not by the federation key {expected_id}"
        )
    try:
        public_key.verify(signature, _canonical(payload))
    except InvalidSignature as err:
        raise SignatureError(f"{folder}: the signature does not match its payload") from err
    actual, signed = folder_hashes(folder), payload.get("files", {})
    for name in sorted(set(signed) | set(actual)):
        if name not in actual:
            raise SignatureError(f"{folder}: signed file {name} is missing")
        if name not in signed:
            raise SignatureError(f"{folder}: file {name} was added after signing")
        if actual[name] != signed[name]:
            raise SignatureError(f"{folder}: file {name} was changed after signing")
    return payload
