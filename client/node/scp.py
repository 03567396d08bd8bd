"""The storage SCP: what the PACS and the modalities talk to.

- Verification (C-ECHO), so a PACS administrator can test the route;
- Storage of CR, DX (for presentation and for processing) and Secondary Capture in the transfer
  syntaxes hospitals send: uncompressed (implicit and explicit VR, deflated), JPEG baseline,
  extended and lossless, JPEG-LS, JPEG 2000 and RLE. The bytes are kept exactly as sent
  (`Event.encoded_dataset`): decoding is the release's job, not the receiver's;
- associations from calling AE titles outside the allow-list are rejected at association
  (result "rejected-permanent", reason "calling AE title not recognised");
- C-STORE answers success only once the instance is on disk and in the queue (`Spool.store`),
  "out of resources" (A700) when a bound is reached or the disk refuses it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)

from privdiff.client.node.queue import NodeQueue
from privdiff.client.node.spool import Spool, Stored

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    *JPEGTransferSyntaxes,
    *JPEGLSTransferSyntaxes,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110

# pynetdicom's standard event log quotes UIDs of every instance: the node keeps its log to its own lines.
_config.LOG_HANDLER_LEVEL = "none"


@dataclass(frozen=True)
class ScpSettings:
    ae_title: str
    host: str
    port: int
    allowed: tuple[str, ...]  # calling AE titles that may associate
    tls: ssl.SSLContext | None = None


def server_tls(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """DICOM TLS with the site's certificate; with `ca`, callers must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def start_scp(settings: ScpSettings, spool: Spool, queue: NodeQueue):
    """Start listening (one thread per association); returns the server (`.shutdown()` to stop)."""
    ae = AE(ae_title=settings.ae_title)
    ae.require_calling_aet = list(settings.allowed)
    ae.add_supported_context(Verification)
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)

    def on_store(event) -> int:
        try:
            stored = spool.store(event.encoded_dataset(include_meta=True))
        except Exception:  # noqa: BLE001 -- never echo it: it may quote the header; the sender retries
            return PROCESSING_FAILURE
        return OUT_OF_RESOURCES if stored is Stored.FULL else SUCCESS

    def on_rejected(event) -> None:
        queue.bump("associations_rejected")

    handlers = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_C_ECHO, lambda event: SUCCESS),
        (evt.EVT_REJECTED, on_rejected),
    ]
    return ae.start_server(
        (settings.host, settings.port), block=False, evt_handlers=handlers, ssl_context=settings.tls
    )
