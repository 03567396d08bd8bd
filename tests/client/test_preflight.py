"""client/preflight.py: what `privdiff-client start` checks before it connects, on the real files
of a `privdiff federation init` kit and a real TLS server on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from privdiff.client import preflight
from privdiff.server.cli import Kit, init
from privdiff_core.errors import PrivdiffError
from privdiff_core.synth import SynthParams, generate_federation


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    root = tmp_path_factory.mktemp("kits")
    init(Kit(root / "fed", sites=1, config="tiny"))
    init(Kit(root / "other", sites=1, config="tiny"))  # another federation: another CA
    return root / "fed", root / "other"


@pytest.fixture
def tls_server(kits):
    """The kit's SuperLink certificate served on a free loopback port (one handshake at a time)."""
    fed, _ = kits
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(fed / "superlink" / "server.crt", fed / "superlink" / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_the_bundles_own_files_pass(kits, tls_server):
    fed, _ = kits
    bundle = fed / "sites" / "site_00"
    preflight.check_root_certificate(bundle / "ca.crt")
    preflight.check_auth_key(bundle / "auth_key")
    assert len(preflight.check_public_key(bundle / "federation-public.pem")) == 16
    assert preflight.check_server(f"localhost:{tls_server}", bundle / "ca.crt") is None
    assert preflight.check_server(f"127.0.0.1:{tls_server}", bundle / "ca.crt") is None


def test_the_model_key_or_a_private_key_passed_as_the_ca_is_named(kits):
    fed, _ = kits
    bundle = fed / "sites" / "site_00"
    with pytest.raises(PrivdiffError, match="is a public key .*federation-public.pem goes to --public-key"):
        preflight.check_root_certificate(bundle / "federation-public.pem")
    for key in (bundle / "auth_key", fed / "superlink" / "server.key"):
        with pytest.raises(PrivdiffError, match="is a private key, not a certificate: pass ca.crt"):
            preflight.check_root_certificate(key)
    with pytest.raises(PrivdiffError, match="not a PEM certificate"):
        preflight.check_root_certificate(bundle / "auth_key.pub")


def test_swapped_keys_are_named(kits):
    fed, _ = kits
    bundle = fed / "sites" / "site_00"
    with pytest.raises(
        PrivdiffError, match=r"is a public key: pass the private key auth_key \(not auth_key.pub\)"
    ):
        preflight.check_auth_key(bundle / "auth_key.pub")
    with pytest.raises(PrivdiffError, match="not an unencrypted OpenSSH private key"):
        preflight.check_auth_key(bundle / "ca.crt")
    with pytest.raises(PrivdiffError, match="not the federation's Ed25519 public key"):
        preflight.check_public_key(bundle / "ca.crt")


def test_a_ca_of_another_federation_fails_the_handshake(kits, tls_server):
    _, other = kits
    with pytest.raises(PrivdiffError, match="not signed by --root-certificates .*this federation"):
        preflight.check_server(f"localhost:{tls_server}", other / "sites" / "site_00" / "ca.crt")


def test_a_server_not_up_yet_is_a_warning_and_an_unknown_host_an_error(kits):
    ca = kits[0] / "sites" / "site_00" / "ca.crt"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert "not reachable yet" in preflight.check_server(f"127.0.0.1:{closed}", ca, timeout=2)
    with pytest.raises(PrivdiffError, match="unknown host name"):
        preflight.check_server("no-such-host.invalid:9092", ca, timeout=2)
    with pytest.raises(PrivdiffError, match="expected HOST:PORT"):
        preflight.check_server("fl.example.org", ca)


def test_a_taken_runtime_port_names_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PrivdiffError, match=rf"--port {port} is already in use .* e\.g\. --port \d+"):
            preflight.check_port_free(port)


def test_data_must_be_one_sites_folder(tmp_path):
    generate_federation(
        tmp_path / "fed", SynthParams(sites=2, patients=2, images_per_patient=1, size=32), progress=False
    )
    assert preflight.check_data(tmp_path / "fed" / "site_00") == "site"
    with pytest.raises(PrivdiffError, match=r"holds 2 sites' folders: .* --data .*site_00"):
        preflight.check_data(tmp_path / "fed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrivdiffError, match="unknown data layout.*privdiff synth"):
        preflight.check_data(tmp_path / "empty")
