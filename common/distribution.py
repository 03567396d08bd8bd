"""Shipping the signed anonymizer to the sites, and each site's local model store.

The server packs every file of the signed folder into an ArrayRecord (one uint8 array per file:
Flower streams arrays in chunks, so a paper-size model needs no message-size tuning) and sends it
as a `query.install_anonymizer` message over the same authenticated channel as training. A site
unpacks it into a temporary folder inside its store, verifies the Ed25519 signature against the
federation's public key, and only then moves it into place:

    MODEL_STORE/
      anonymizers/<version>/   signed anonymizer folders, never modified after install
      current                  symlink -> anonymizers/<version>, swapped atomically
      installs.jsonl           one line per install attempt (version, ok, error, time)

A folder that fails verification is deleted and `current` keeps pointing at the previous model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from privdiff_core.signing import SIGNATURE_FILE, SignatureError, load_public_key, verify_model

ANONYMIZERS = "anonymizers"
CURRENT = "current"
INSTALL_LOG = "installs.jsonl"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def model_version(folder: Path) -> str:
    """A name for a signed folder: its signing time and a digest of its signature file."""
    record = json.loads((folder / SIGNATURE_FILE).read_text())
    created = str(record["payload"].get("metadata", {}).get("created", "unsigned-time"))
    stamp = re.sub(r"[^0-9A-Za-z]", "", created)[:16] or "undated"
    digest = hashlib.sha256((folder / SIGNATURE_FILE).read_bytes()).hexdigest()[:12]
    return f"{stamp}-{digest}"


def pack_folder(folder: Path) -> dict[str, np.ndarray]:
    """Every file under `folder` as a uint8 array keyed by its POSIX relative path."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            files[path.relative_to(folder).as_posix()] = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if SIGNATURE_FILE not in files:
        raise SignatureError(f"{folder}: refusing to distribute an unsigned model (no {SIGNATURE_FILE})")
    return files


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise SignatureError(f"refusing a model file with an unsafe path: {name!r}")
    return path


@dataclass(frozen=True)
class InstallResult:
    installed: bool
    version: str
    key_id: str = ""
    error: str = ""

    def to_record(self) -> dict[str, str | bool]:
        return asdict(self)


def current_model(store: Path) -> Path | None:
    """The folder `MODEL_STORE/current` points to, or None before the first install."""
    link = Path(store) / CURRENT
    return link.resolve() if link.exists() else None


def _point_current(store: Path, version: str) -> None:
    tmp = store / f".{CURRENT}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path(ANONYMIZERS) / version, target_is_directory=True)
    os.replace(tmp, store / CURRENT)  # rename over the old link: readers see old or new, never none


def _log(store: Path, result: InstallResult) -> None:
    line = json.dumps({**result.to_record(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    with open(store / INSTALL_LOG, "a") as handle:
        handle.write(line + "\n")


def install_anonymizer(
    files: dict[str, np.ndarray], version: str, store: Path, public_key_path: Path
) -> InstallResult:
    """Verify the received files and make them the site's current anonymizer (see module doc).

    Never raises for a bad model: the result says what failed, and the previous model stays.
    """
    store = Path(store)
    if not _VERSION.match(version):
        return InstallResult(
            False, version, error=f"refusing a model version with an unsafe name: {version!r}"
        )
    (store / ANONYMIZERS).mkdir(parents=True, exist_ok=True)
    incoming = store / f".incoming-{version}-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        public_key = load_public_key(public_key_path)
        for name, data in files.items():
            target = incoming / _safe_relative(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(np.ascontiguousarray(data, dtype=np.uint8).tobytes())
        payload = verify_model(incoming, public_key)
        final = store / ANONYMIZERS / version
        if final.exists():  # the same version again (a redistribution): keep the verified copy
            verify_model(final, public_key)
            shutil.rmtree(incoming)
        else:
            os.replace(incoming, final)
        _point_current(store, version)
        result = InstallResult(True, version, key_id=str(payload["key_id"]))
    except (SignatureError, OSError) as err:
        shutil.rmtree(incoming, ignore_errors=True)
        result = InstallResult(False, version, error=str(err).replace(str(incoming), "<received model>"))
    _log(store, result)
    return result
