"""Which anonymizer a site is about to use: its signature, key id and content hash.

Used by `privdiff-client verify` and, before any image is touched, by `privdiff-client release`.
The model hash is the SHA-256 of the canonical JSON list of every file's SHA-256 (the signature
file excluded), the same list the federation signs: one number names one exact model whether or
not it carries a signature.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privdiff_core.errors import PrivdiffError
from privdiff_core.model.folder import MANIFEST_FILE
from privdiff_core.signing import SignatureError, folder_hashes, load_public_key, verify_model

UNSIGNED = "UNSIGNED"


class ModelTrustError(PrivdiffError):
    """No usable model folder, or an unsigned model without --allow-unsigned."""


@dataclass(frozen=True)
class ModelTrust:
    folder: Path
    model_sha256: str
    key_id: str  # the signing key's id, or UNSIGNED
    signed: bool
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def privacy_budget(self) -> str:
        """The differential-privacy budget the signed metadata states (a federated DP run writes
        epsilon at its delta; server/privacy.py), for the release's audit trail and summary."""
        privacy = self.metadata.get("privacy")
        if isinstance(privacy, dict) and privacy.get("epsilon") is not None:
            spent = ", budget spent" if privacy.get("budget_spent") else ""
            return f"DP epsilon {float(privacy['epsilon']):.4g} at delta {float(privacy['delta']):g}{spent}"
        dp = self.metadata.get("dp")
        if isinstance(dp, dict) and dp.get("enabled") is False:
            return "no differential privacy (trained without DP)"
        return "not stated by the signed metadata"


def model_sha256(folder: str | Path) -> str:
    hashes = folder_hashes(folder)
    return hashlib.sha256(json.dumps(hashes, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def establish_trust(folder: str | Path, public_key: str | Path | None, allow_unsigned: bool) -> ModelTrust:
    """Verify the model against `public_key`; without a key, accept it only if `allow_unsigned`.

    A key that is given is always checked, even with `allow_unsigned`: a failed check is never
    downgraded to "unsigned". Raises `SignatureError` / `ModelTrustError` with the reason.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelTrustError(f"--model {folder}: no such folder")
    if not any(folder.iterdir()):
        raise ModelTrustError(f"--model {folder}: the folder is empty")
    # A `privdiff train` run folder holds the anonymizer in anonymizer/: that is what is signed.
    if not (folder / MANIFEST_FILE).is_file() and (folder / "anonymizer" / MANIFEST_FILE).is_file():
        folder = folder / "anonymizer"
    if public_key is not None:
        payload = verify_model(folder, load_public_key(public_key))
        return ModelTrust(folder, model_sha256(folder), payload["key_id"], True, payload.get("metadata", {}))
    if not allow_unsigned:
        raise SignatureError(
            f"refusing to use {folder} without checking its signature: pass the federation's "
            "--public-key, or --allow-unsigned to release with an unsigned model (not for production)"
        )
    return ModelTrust(folder, model_sha256(folder), UNSIGNED, False)
