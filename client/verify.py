"""`privdiff-client verify`: check the shared anonymizer's signature before using it."""

from __future__ import annotations

import argparse
import json

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
    from client.model_trust import establish_trust

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
    print(json.dumps(trust.metadata, indent=2, sort_keys=True) if trust.metadata else "  (none)")
    return 0
