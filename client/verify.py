"""`privdiff-client verify`: check the shared anonymizer's signature before using it."""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

HELP = (
    "check that an anonymizer folder is signed by the federation's key and unchanged since; prints "
    "the key id, the model hash and the signed metadata (exit status 2 if the check fails)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="the anonymizer folder")
    parser.add_argument(
        "--public-key",
        required=True,
        metavar="KEY",
        help="the federation's Ed25519 public key (PEM), as distributed by its coordinator",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from privdiff.client.model_trust import establish_trust

    trust = establish_trust(args.model, args.public_key, allow_unsigned=False)
    if args.json:
        print(
            json.dumps(
                {
                    "verified": True,
                    "key_id": trust.key_id,
                    "model_sha256": trust.model_sha256,
                    "metadata": trust.metadata,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    print(f"signature OK: {trust.folder}")
    print(f"key id:        {trust.key_id}")
    print(f"model sha256:  {trust.model_sha256}")
    print("signed metadata:")
    print(metadata_yaml(trust.metadata) if trust.metadata else "  (none)")
    return 0


def metadata_yaml(metadata: dict[str, Any]) -> str:
    """The signed metadata as indented YAML; a config held as YAML text (a federated model's
    resolved config) is shown as YAML in its own order, after the other fields."""
    import yaml

    shown = {key: value for key, value in metadata.items() if key != "config"}
    text = yaml.safe_dump(shown, sort_keys=True, allow_unicode=True) if shown else ""
    if "config" in metadata:
        config = metadata["config"]
        if isinstance(config, str):
            with contextlib.suppress(yaml.YAMLError):
                config = yaml.safe_load(config)
        text += yaml.safe_dump({"config": config}, sort_keys=False, allow_unicode=True)
    return "\n".join("  " + line for line in text.splitlines())
