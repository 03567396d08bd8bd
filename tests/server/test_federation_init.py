"""`privdiff federation init`: the keys, certificates and commands of a real federation."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privdiff_core.cli import main
from privdiff_core.signing import load_private_key, load_public_key, sign_model, verify_model
from server.cli import init
from server.errors import FederationError


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    out = tmp_path_factory.mktemp("fed") / "federation"
    text = init(out, sites=2, host="fl.hospital-a.org", public_port=9192, superlink_port=9191, config="demo")
    return out, text


def test_private_keys_are_readable_by_the_owner_only(federation):
    out, _ = federation
    private = [
        out.parent / "federation-ca-OFFLINE" / "ca.key",
        out / "superlink" / "server.key",
        out / "signing" / "model-signing.pem",
        out / "sites" / "site_00" / "auth_key",
        out / "sites" / "site_01" / "auth_key",
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_ca_key_is_written_outside_the_federation_folder(federation):
    """The server runs from (and operators copy) the federation folder: the CA key is not in it."""
    out, _ = federation
    ca_key = out.parent / "federation-ca-OFFLINE" / "ca.key"
    key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    assert key.public_key().public_numbers() == ca.public_key().public_numbers()
    secret = ca_key.read_bytes()
    assert not [p for p in out.rglob("*") if p.is_file() and secret in p.read_bytes()]
    (out.parent / "again-ca-OFFLINE").mkdir()
    (out.parent / "again-ca-OFFLINE" / "ca.key").write_text("an earlier federation's CA key")
    with pytest.raises(FederationError, match="never overwritten"):
        init(out.parent / "again", sites=1, host="h", public_port=1, superlink_port=2, config="demo")
    assert (out.parent / "again-ca-OFFLINE" / "ca.key").read_text() == "an earlier federation's CA key"


def test_the_superlink_certificate_is_signed_by_the_ca_for_every_name_sites_use(federation):
    out, _ = federation
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "superlink" / "server.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fl.hospital-a.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    key = serialization.load_pem_private_key((out / "superlink" / "server.key").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_each_site_gets_an_ec_p384_openssh_identity_and_the_federation_public_key(federation, tmp_path):
    out, _ = federation
    identities = set()
    for site in ("site_00", "site_01"):
        bundle = out / "sites" / site
        key = serialization.load_ssh_private_key((bundle / "auth_key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        public = serialization.load_ssh_public_key((bundle / "auth_key.pub").read_bytes())
        assert public.public_numbers() == key.public_key().public_numbers()
        identities.add((bundle / "auth_key.pub").read_text())
        assert (bundle / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
        assert (bundle / "federation-public.pem").read_bytes() == (
            out / "signing" / "model-signing.pub"
        ).read_bytes()
        assert not (bundle / "model-signing.pem").exists()
    assert len(identities) == 2
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    sign_model(model, load_private_key(out / "signing" / "model-signing.pem"))
    verify_model(model, load_public_key(out / "sites" / "site_00" / "federation-public.pem"))


def test_commands_start_a_fenced_tls_superlink_register_sites_and_submit_the_run(federation):
    out, text = federation
    assert (out / "COMMANDS.md").read_text() == text
    superlink = next(line for line in text.splitlines() if "flower-superlink" in line)
    block = text[text.index(superlink) : text.index("```", text.index(superlink))]
    for flag in (
        "--host 127.0.0.1",
        "--port 9191",
        "--ssl-ca-certfile",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
    ):
        assert flag in block, flag
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in text and "--insecure" not in text
    assert f"nginx -p {out / 'superlink' / 'nginx'} -c {out / 'superlink' / 'nginx-fleet.conf'}" in text
    for site in ("site_00", "site_01"):
        assert (
            f"flwr supernode register {out / 'sites' / site / 'auth_key.pub'} privdiff --name {site}" in text
        )
    assert text.count("privdiff-client start --superlink fl.hospital-a.org:9192") == 2
    signing_key = out / "signing" / "model-signing.pem"
    assert f"flwr run . privdiff --run-config \"config='demo' signing-key='{signing_key}'" in text
    config = (out / "flwr-home" / "config.toml").read_text()
    assert (
        'address = "127.0.0.1:9191"' in config
        and f'root-certificates = "{out / "superlink" / "ca.crt"}"' in config
    )
    nginx = (out / "superlink" / "nginx-fleet.conf").read_text()
    assert "listen 9192 ssl;" in nginx and "proxy_pass https://127.0.0.1:9191;" in nginx and "@" not in nginx


def test_an_existing_federation_is_never_overwritten(federation):
    out, _ = federation
    with pytest.raises(FederationError, match="not empty"):
        init(out, sites=1, host="x", public_port=1, superlink_port=2, config="tiny")


def test_the_cli_prints_the_commands(tmp_path, capsys):
    assert main(["federation", "init", "--sites", "1", "--out", str(tmp_path / "fed")]) == 0
    assert "flower-superlink" in capsys.readouterr().out
    assert main(["federation", "init", "--sites", "1", "--out", str(tmp_path / "fed")]) == 2
    assert "not empty" in capsys.readouterr().err
