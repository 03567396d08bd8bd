"""The node's DICOM networking against peers that are not ours: DCMTK's echoscu, storescu and
storescp and pynetdicom's SCU, all real processes or associations on 127.0.0.1."""

from __future__ import annotations

import datetime
import ssl
import time

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dicom_net import (
    Processes,
    archived,
    echoscu,
    free_port,
    port_open,
    pynetdicom_echo,
    pynetdicom_store,
    storescp_command,
    storescu,
    wait_for,
)
from phi_dicom import DX_IMAGE_STORAGE, copy_real, phi_dataset, study_uids, write_dicom
from pydicom.uid import RLELossless

from privdiff.client.audit import PastOutcome
from privdiff.client.node.forwarder import Destination, Forwarder, client_tls
from privdiff.client.node.queue import NodeQueue
from privdiff.client.node.scp import OUT_OF_RESOURCES, ScpSettings, server_tls, start_scp
from privdiff.client.node.spool import Spool, SpoolLimits

SECRET = b"node network test secret 0123456"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ROOMY = SpoolLimits(10**9, 0, 1000)


class Node:
    """The node's receiving half in this process: spool, queue and SCP on a free port."""

    def __init__(self, folder, limits=ROOMY, tls=None):
        self.queue = NodeQueue(folder)
        self.spool = Spool(folder / "spool", self.queue, SECRET, limits)
        self.port = free_port()
        self.server = start_scp(
            ScpSettings("PRIVDIFF", "127.0.0.1", self.port, ("PACS", "MODALITY1"), tls),
            self.spool,
            self.queue,
        )

    def close(self):
        self.server.shutdown()
        self.queue.close()

    def spooled(self):
        return sorted(p for p in self.spool.folder.rglob("*.dcm"))


@pytest.fixture
def node(tmp_path):
    node = Node(tmp_path / "node")
    yield node
    node.close()


def test_echo_from_an_allowed_ae_and_rejection_of_any_other(node):
    assert echoscu(node.port, "PACS").returncode == 0
    assert echoscu(node.port, "MODALITY1").returncode == 0
    refused = echoscu(node.port, "INTRUDER")
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert node.queue.counts()["associations_rejected"] == 1


def test_dcmtk_storescu_sends_a_real_jpeg_radiograph_kept_as_sent(node, tmp_path):
    original = copy_real("rsna_cr_jpeg_baseline.dcm", tmp_path / "pacs")
    other = write_dicom(
        phi_dataset(study_uids(7), sop_class=DX_IMAGE_STORAGE, modality="DX"), tmp_path / "pacs" / "dx.dcm"
    )
    sent = storescu([original, other], node.port, "PACS")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    kept = {pydicom.dcmread(path).SOPInstanceUID: pydicom.dcmread(path) for path in node.spooled()}
    assert len(kept) == 2
    source = pydicom.dcmread(original)
    copy = kept[source.SOPInstanceUID]
    assert copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID  # JPEG baseline
    assert copy.PixelData == source.PixelData
    counts = node.queue.counts()
    assert counts["received"] == 2 and counts["pending"] == 2
    # a unknown sender's store never reaches the spool
    assert storescu([original], node.port, "INTRUDER").returncode != 0
    assert len(node.spooled()) == 2


def test_pynetdicom_scu_sends_rle_compressed_dx(node, tmp_path):
    ds = phi_dataset(study_uids(9), modality="DX", sop_class=DX_IMAGE_STORAGE, photometric="MONOCHROME2")
    path = write_dicom(ds, tmp_path / "pacs" / "dx.dcm")
    rle = pydicom.dcmread(path)
    rle.compress(RLELossless)
    rle.save_as(path)
    assert pynetdicom_store([path], node.port, "MODALITY1") == [0]
    [kept] = node.spooled()
    kept = pydicom.dcmread(kept)
    assert kept.file_meta.TransferSyntaxUID == RLELossless and kept.PixelData == rle.PixelData


def test_pynetdicom_scu_is_told_out_of_resources_when_the_spool_is_full(tmp_path):
    node = Node(tmp_path / "node", limits=SpoolLimits(max_bytes=200, min_free_bytes=0, max_waiting=1000))
    try:
        path = write_dicom(phi_dataset(study_uids(8)), tmp_path / "pacs" / "cr.dcm")
        assert pynetdicom_store([path], node.port, "PACS") == [OUT_OF_RESOURCES]
        assert node.spooled() == [] and node.queue.counts()["received"] == 0
        node.spool.limits = ROOMY
        assert pynetdicom_store([path], node.port, "PACS") == [0]  # the PACS's retry is accepted
        assert len(node.spooled()) == 1
    finally:
        node.close()


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "node.crt", tmp_path / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_dicom_tls_with_the_sites_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    node = Node(tmp_path / "node", tls=server_tls(cert, key, None))
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cert)
        assert pynetdicom_echo(node.port, "PACS", tls=(client, "localhost"))
        assert not pynetdicom_echo(node.port, "PACS")  # plain DICOM is not spoken on a TLS port
    finally:
        node.close()


def _released_files(release_dir, count):
    """Files as the release writes them (Secondary Capture, explicit VR), queued for the archive."""
    queue = NodeQueue(release_dir.parent)
    spool = Spool(release_dir.parent / "spool", queue, SECRET, ROOMY)
    uids = []
    for index in range(count):
        ds = phi_dataset(study_uids(500 + index), modality="OT", sop_class=SECONDARY_CAPTURE, seed=index)
        spool.store(write_dicom(ds, release_dir.parent / "received" / f"{index}.dcm").read_bytes())
        uids.append(ds.SOPInstanceUID)
    queue.start_batch("b1", queue.quiet_studies(time.time() + 1))
    outcomes = {}
    for index, instance in enumerate(sorted(queue.batch("b1"), key=lambda i: i.spool_file)):
        output = f"released/{index}.dcm"
        (release_dir / output).parent.mkdir(parents=True, exist_ok=True)
        (release_dir / output).write_bytes((release_dir.parent / "received" / f"{index}.dcm").read_bytes())
        outcomes[instance.input_sha] = PastOutcome("released", output, "ok")
    queue.finish_batch("b1", outcomes)
    return queue, uids


def test_an_archive_that_is_down_loses_nothing_and_gets_everything_once_when_it_is_back(tmp_path):
    release_dir = tmp_path / "node" / "release"
    queue, uids = _released_files(release_dir, 3)
    port = free_port()
    messages = []
    forwarder = Forwarder(
        queue,
        release_dir,
        Destination.parse(f"ARCHIVE@127.0.0.1:{port}"),
        "PRIVDIFF",
        messages.append,
        first_delay=0.1,
        max_delay=0.3,
    )
    processes = Processes(tmp_path / "logs")
    try:
        for _ in range(3):  # down: every round fails, nothing is dropped
            assert forwarder.step() is False
            time.sleep(0.35)
        assert queue.counts()["forward_pending"] == 3 and queue.counts()["forwarded"] == 0
        assert "not reachable" in queue.last_forward_error() and "retrying" in messages[-1]
        assert len(list((release_dir / "released").iterdir())) == 3
        archive = tmp_path / "archive"
        processes.start("storescp", storescp_command(port, archive), env=None)
        wait_for(lambda: port_open(port), 30, "the archive to listen", every=0.2)

        def delivered():
            forwarder.step()
            return queue.counts()["forward_pending"] == 0

        wait_for(delivered, 30, "the queued files to reach the archive", every=0.2)
        stored = archived(archive)
        assert sorted(ds.SOPInstanceUID for ds in stored) == sorted(uids)  # each once
        assert queue.counts()["forwarded"] == 3 and queue.last_forward_error() == ""
        assert list((release_dir / "released").iterdir()) == []  # the archive holds them now
        assert forwarder.step() is False and len(archived(archive)) == 3  # nothing sent twice
    finally:
        processes.stop_all()
        queue.close()


def test_forwarding_over_dicom_tls_checks_the_archives_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    archive = Node(tmp_path / "archive", tls=server_tls(cert, key, None))  # a TLS storage SCP
    release_dir = tmp_path / "node" / "release"
    queue, _ = _released_files(release_dir, 2)
    try:
        address = f"ARCHIVE@localhost:{archive.port}"
        untrusting = Forwarder(
            queue, release_dir, Destination.parse(address, client_tls(None, None, None)), "PACS", print
        )
        assert untrusting.step() is False  # a certificate it cannot verify: nothing sent
        assert queue.counts()["forward_pending"] == 2 and archive.spooled() == []
        trusting = Forwarder(
            queue, release_dir, Destination.parse(address, client_tls(cert, None, None)), "PACS", print
        )
        assert trusting.step() is True
        assert queue.counts()["forwarded"] == 2 and len(archive.spooled()) == 2
    finally:
        queue.close()
        archive.close()
