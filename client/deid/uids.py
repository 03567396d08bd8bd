"""Site secrets and the UID remapping they key (Annex E action `U`).

A UID is replaced by `2.25.<n>`, where n is a UUID (RFC 9562 version 8, "custom") built from the
first 128 bits of HMAC-SHA256(site secret, original UID). Hence:

- consistent: one original UID always gives one new UID, so a study stays one study, a series one
  series, and a reference inside a sequence points at the same new UID as the instance it names;
- repeatable: a rerun (or a resumed release) with the same secret writes the same UIDs;
- unpredictable elsewhere: without the secret nobody (another site, the recipient) can compute the
  new UID of a known original, nor invert it.

The same secret also salts the hashes the audit trail and logs use to name inputs, so those
hashes cannot be checked against a guessed file or path either.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from privdiff_core.errors import PrivdiffError

SECRET_BYTES = 32
UID_ROOT = "2.25."
_UID_CONTEXT = b"privdiff/uid/v1\x00"


class SiteSecretError(PrivdiffError):
    """The site secret file is missing, unreadable or too short."""


def default_secret_path() -> Path:
    """`$PRIVDIFF_HOME/site_secret`, by default `~/.privdiff/site_secret`."""
    home = os.environ.get("PRIVDIFF_HOME")
    return (Path(home) if home else Path.home() / ".privdiff") / "site_secret"


def load_site_secret(path: str | Path) -> bytes:
    """The secret bytes of `path` (at least 16 bytes of content)."""
    path = Path(path)
    try:
        secret = path.read_bytes().strip()
    except OSError as err:
        raise SiteSecretError(f"cannot read the site secret {path}: {err.strerror}") from err
    if len(secret) < 16:
        raise SiteSecretError(
            f"site secret {path} holds {len(secret)} bytes; use at least 16 random bytes "
            f"(e.g. `head -c 32 /dev/urandom > {path}`)"
        )
    return secret


def create_site_secret(path: str | Path) -> bytes:
    """Write a new random secret (hex, file mode 0600) atomically; refuses to overwrite one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(SECRET_BYTES).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return secret


def secret_fingerprint(secret: bytes) -> str:
    """A short public name for a secret (it reveals nothing about it): lets a resumed release
    check it runs with the secret the folder was started with."""
    return hmac.new(secret, b"privdiff/fingerprint/v1", hashlib.sha256).hexdigest()[:16]


def salted_hash(secret: bytes, data: bytes, purpose: str) -> str:
    """HMAC-SHA256 of `data` keyed by the secret and a purpose label, 32 hex digits."""
    return hmac.new(secret, purpose.encode() + b"\x00" + data, hashlib.sha256).hexdigest()[:32]


def salted_file_hash(secret: bytes, handle: BinaryIO, purpose: str) -> str:
    """`salted_hash` of a file's content, read in chunks (memory stays flat for any file size)."""
    digest = hashlib.file_digest(handle, lambda: hmac.new(secret, purpose.encode() + b"\x00", hashlib.sha256))
    return digest.hexdigest()[:32]


def _uuid8_int(digest: bytes) -> int:
    """128 bits of `digest` as an RFC 9562 version-8 UUID integer (version and variant bits set)."""
    value = bytearray(digest[:16])
    value[6] = (value[6] & 0x0F) | 0x80  # version 8
    value[8] = (value[8] & 0x3F) | 0x80  # variant 10xx
    return int.from_bytes(value, "big")


class UIDMapper:
    """Deterministic keyed UID remapping (thread-safe: the cache only ever gains equal values)."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise SiteSecretError("the UID secret must be at least 16 bytes")
        self._secret = secret
        self._cache: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        # Trailing NUL/space padding is an encoding artefact, not part of the UID.
        original = str(uid).strip(" \x00")
        mapped = self._cache.get(original)
        if mapped is None:
            digest = hmac.new(self._secret, _UID_CONTEXT + original.encode(), hashlib.sha256).digest()
            mapped = UID_ROOT + str(_uuid8_int(digest))
            self._cache[original] = mapped
        return mapped

    def derived(self, uid: str, purpose: str) -> str:
        """A second, independent UID for the same original (e.g. a new UID for something we create)."""
        return self(f"{purpose}\x00{uid}")
