"""The signed anonymizer at a site: verify, install atomically, keep the old one on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privdiff.common.distribution import (
    INSTALL_LOG,
    current_model,
    install_anonymizer,
    model_version,
    pack_folder,
)
from privdiff_core.signing import SignatureError, generate_signing_key, load_private_key, sign_model


def _signed_model(root: Path, name: str, key: Path, payload: bytes) -> Path:
    folder = root / name
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.safetensors").write_bytes(payload)
    (folder / "manifest.json").write_text(json.dumps({"name": name}))
    sign_model(folder, load_private_key(key), {"created": "2026-11-27T10:00:00Z", "rounds": 3})
    return folder


@pytest.fixture
def keys(tmp_path):
    generate_signing_key(tmp_path / "fed.pem", tmp_path / "fed.pub")
    generate_signing_key(tmp_path / "other.pem", tmp_path / "other.pub")
    return tmp_path


def test_a_verified_model_becomes_current_and_a_new_one_replaces_it(keys, tmp_path):
    store = tmp_path / "store"
    first = _signed_model(tmp_path, "first", keys / "fed.pem", b"v1")
    result = install_anonymizer(pack_folder(first), model_version(first), store, keys / "fed.pub")
    assert result.installed and result.error == ""
    assert (current_model(store) / "unet" / "weights.safetensors").read_bytes() == b"v1"
    second = _signed_model(tmp_path, "second", keys / "fed.pem", b"v2")
    assert install_anonymizer(pack_folder(second), model_version(second), store, keys / "fed.pub").installed
    assert (current_model(store) / "unet" / "weights.safetensors").read_bytes() == b"v2"
    assert len(list((store / "anonymizers").iterdir())) == 2  # versions are kept, never modified
    assert len((store / INSTALL_LOG).read_text().splitlines()) == 2


def test_a_model_signed_by_another_key_is_refused_and_the_old_one_stays(keys, tmp_path):
    store = tmp_path / "store"
    good = _signed_model(tmp_path, "good", keys / "fed.pem", b"good")
    install_anonymizer(pack_folder(good), model_version(good), store, keys / "fed.pub")
    forged = _signed_model(tmp_path, "forged", keys / "other.pem", b"evil")
    result = install_anonymizer(pack_folder(forged), model_version(forged), store, keys / "fed.pub")
    assert not result.installed and "not by the federation key" in result.error
    assert (current_model(store) / "unet" / "weights.safetensors").read_bytes() == b"good"
    assert not any(p.name.startswith(".incoming") for p in store.iterdir())


def test_a_file_changed_in_transit_is_refused(keys, tmp_path):
    store = tmp_path / "store"
    model = _signed_model(tmp_path, "model", keys / "fed.pem", b"weights")
    files = pack_folder(model)
    files["unet/weights.safetensors"] = files["unet/weights.safetensors"].copy()
    files["unet/weights.safetensors"][0] ^= 1
    result = install_anonymizer(files, model_version(model), store, keys / "fed.pub")
    assert not result.installed and "changed after signing" in result.error
    assert current_model(store) is None


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/file", "a/../../b"])
def test_a_file_name_escaping_the_store_is_refused(keys, tmp_path, name):
    model = _signed_model(tmp_path, "model", keys / "fed.pem", b"weights")
    files = {**pack_folder(model), name: pack_folder(model)["manifest.json"]}
    result = install_anonymizer(files, model_version(model), tmp_path / "store", keys / "fed.pub")
    assert not result.installed and "unsafe path" in result.error
    assert not (tmp_path / "etc").exists()


def test_an_unsafe_version_name_is_refused(keys, tmp_path):
    model = _signed_model(tmp_path, "model", keys / "fed.pem", b"weights")
    result = install_anonymizer(pack_folder(model), "../escape", tmp_path / "store", keys / "fed.pub")
    assert not result.installed and "unsafe name" in result.error


def test_an_unsigned_folder_is_never_sent(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"x")
    with pytest.raises(SignatureError, match="unsigned"):
        pack_folder(tmp_path / "model")
