import json

import pytest

from privdiff_core.signing import (
    SignatureError,
    generate_signing_key,
    load_private_key,
    load_public_key,
    sign_model,
    verify_model,
)


@pytest.fixture
def signed_folder(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    generate_signing_key(keys / "sign.key", keys / "sign.pub")
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "weights.safetensors").write_bytes(b"\x00" * 100)
    (model / "manifest.json").write_text("{}")
    sign_model(model, load_private_key(keys / "sign.key"), {"rounds": 3})
    return model, load_public_key(keys / "sign.pub")


def test_signed_model_verifies(signed_folder):
    model, public = signed_folder
    assert verify_model(model, public)["metadata"] == {"rounds": 3}


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda m: (m / "unet" / "weights.safetensors").write_bytes(b"\x01" * 100), "changed"),
        (lambda m: (m / "extra.bin").write_bytes(b"x"), "added"),
        (lambda m: (m / "manifest.json").unlink(), "missing"),
        (lambda m: (m / "signature.json").unlink(), "not signed"),
    ],
)
def test_tampered_model_fails_verification(signed_folder, tamper, message):
    model, public = signed_folder
    tamper(model)
    with pytest.raises(SignatureError, match=message):
        verify_model(model, public)


def test_forged_payload_fails(signed_folder):
    model, public = signed_folder
    record = json.loads((model / "signature.json").read_text())
    record["payload"]["metadata"]["rounds"] = 99
    (model / "signature.json").write_text(json.dumps(record))
    with pytest.raises(SignatureError, match="does not match"):
        verify_model(model, public)


def test_other_key_is_refused(signed_folder, tmp_path):
    model, _ = signed_folder
    generate_signing_key(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(SignatureError, match="not by the federation key"):
        verify_model(model, load_public_key(tmp_path / "other.pub"))
