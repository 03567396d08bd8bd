"""`privdiff federation init`: the keys, certificates and commands of a real federation."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import privdiff.server.cli
from privdiff.common.errors import FederationError
from privdiff.server.cli import Kit, init
from privdiff_core.cli import main
from privdiff_core.signing import load_private_key, load_public_key, sign_model, verify_model


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    out = tmp_path_factory.mktemp("fed") / "federation"
    text = init(
        Kit(out, sites=2, host="fl.hospital-a.org", public_port=9192, superlink_port=9191, config="demo")
    )
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
        init(Kit(out.parent / "again", sites=1, host="h", public_port=1, superlink_port=2, config="demo"))
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
    app = Path(privdiff.server.cli.__file__).resolve().parents[1]
    assert f"flwr run {app} privdiff --run-config \"config='demo' signing-key='{signing_key}'" in text
    # the run waits for exactly the sites of this kit, whatever the config's min_sites says
    assert "overrides='federation.min_sites=2 federation.sites=2'" in text
    config = (out / "flwr-home" / "config.toml").read_text()
    assert (
        'address = "127.0.0.1:9191"' in config
        and f'root-certificates = "{out / "superlink" / "ca.crt"}"' in config
    )
    nginx = (out / "superlink" / "nginx-fleet.conf").read_text()
    assert "listen 9192 ssl;" in nginx and "listen [::]:9192 ssl;" in nginx  # real host: every interface
    assert "proxy_pass https://127.0.0.1:9191;" in nginx and "@" not in nginx
    assert "placeholders" not in nginx and "Written by `privdiff federation init`" in nginx
    assert f"FLWR_HOME={out / 'flwr-home'}" in nginx  # the refusal names where the operator API is


def test_real_hosts_get_the_bundle_folder_at_the_hospital_and_one_data_step(federation):
    out, text = federation
    for site in ("site_00", "site_01"):
        home = Path("/opt/privdiff") / site
        assert f"--root-certificates {home / 'ca.crt'} --auth-key {home / 'auth_key'}" in text
        assert f"--model-store {home / 'model-store'}" in text and f"--data {home / 'data'}" in text
    assert "labels.csv" in text and "--port 9094" in text


def test_a_one_host_trial_kit_needs_no_editing(tmp_path):
    out = tmp_path / "fed"
    text = init(Kit(out, sites=2, config="tiny"))
    # data, runtime port, model store and log: one of each per site, all absolute, all under out
    assert f"privdiff synth --config tiny --sites 2 --out {out / 'data'}" in text
    for i, site in enumerate(("site_00", "site_01")):
        bundle = out / "sites" / site
        assert f"--data {out / 'data' / site} --port {9094 + i}" in text
        assert f"--model-store {bundle / 'model-store'} --log {bundle / 'site.log'}" in text
        assert f"--root-certificates {bundle / 'ca.crt'}" in text
    assert "privdiff-client start --superlink localhost:9092" in text
    assert "overrides='federation.min_sites=2 federation.sites=2'" in text
    nginx = (out / "superlink" / "nginx-fleet.conf").read_text()
    assert "listen 127.0.0.1:9092 ssl;" in nginx and "[::]" not in nginx  # a trial stays on loopback
    # every path in a command is absolute (nginx reads -c relative to -p, the sites run elsewhere)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for word in block.split():
            if "/" in word:
                assert word.lstrip("'\"").startswith("/") or "=/" in word or "='/" in word, word


@pytest.mark.parametrize(
    ("bind", "listen"),
    [
        ("*", ["listen 9092 ssl;", "listen [::]:9092 ssl;"]),
        ("192.0.2.10", ["listen 192.0.2.10:9092 ssl;"]),
        ("2001:db8::1", ["listen [2001:db8::1]:9092 ssl;"]),
    ],
)
def test_bind_chooses_the_interface_nginx_listens_on(tmp_path, bind, listen):
    init(Kit(tmp_path / "fed", sites=1, host="fl.example.org", bind=bind))
    nginx = (tmp_path / "fed" / "superlink" / "nginx-fleet.conf").read_text()
    assert [line.strip() for line in nginx.splitlines() if line.strip().startswith("listen ")] == listen


def test_an_existing_federation_is_never_overwritten(federation):
    out, _ = federation
    with pytest.raises(FederationError, match="not empty"):
        init(Kit(out, sites=1, host="x", public_port=1, superlink_port=2, config="tiny"))


def test_the_cli_prints_the_commands(tmp_path, capsys):
    assert main(["federation", "init", "--sites", "1", "--out", str(tmp_path / "fed")]) == 0
    assert "flower-superlink" in capsys.readouterr().out
    assert main(["federation", "init", "--sites", "1", "--out", str(tmp_path / "fed")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_nodes_without_the_federations_flwr_home_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    assert main(["federation", "nodes"]) == 2
    assert "set FLWR_HOME to the federation's flwr-home" in capsys.readouterr().err
    assert not (tmp_path / "flwr-home").exists()  # nothing written where the operator did not ask
