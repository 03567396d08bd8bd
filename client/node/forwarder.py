"""The storage SCU: released files to the research archive, none lost, none sent twice.

Each released file is queued once (`forwards`, keyed by its output path). The forwarder sends the
queued files in order over one association per round, and marks each one `sent` in the queue the
moment the archive answers success, before sending the next; only then is the file deleted from the
node (the archive holds it now). An archive that is down, refuses the association, aborts or answers
a failure leaves the files `pending`, and the next round waits longer (exponential backoff, from
`first_delay` up to `max_delay`), for as long as it takes: nothing is ever dropped.

The one window left is the instant between the archive's success and the queue's commit: a node
killed exactly there sends that one file again after its restart (same SOP Instance UID, same
bytes, so the archive stores the same object again rather than a new one).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from privdiff.client.node.queue import NodeQueue
from privdiff.client.outputs import RELEASED_DIR

# Success, and the storage warnings that still mean "stored" (coercion, elements discarded).
STORED = (0x0000, 0xB000, 0xB006, 0xB007)
ROUND_SIZE = 100


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, text: str, tls: ssl.SSLContext | None = None) -> Destination:
        """AE@HOST:PORT, the way DICOM routes are written down."""
        ae_title, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and ae_title and host and port.isdigit()):
            raise ValueError(f"--destination must look like AE_TITLE@HOST:PORT, got {text!r}")
        if not 0 < int(port) < 65536:
            raise ValueError(f"--destination port must be 1-65535, got {port}")
        return cls(ae_title, host, int(port), tls)


def client_tls(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """TLS towards the archive: its certificate checked against `ca`, ours presented if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class Forwarder:
    def __init__(
        self,
        queue: NodeQueue,
        release_dir: Path,
        destination: Destination,
        calling_ae: str,
        say: Callable[[str], None],
        first_delay: float = 2.0,
        max_delay: float = 300.0,
    ):
        self.queue, self.release_dir, self.destination, self.say = queue, release_dir, destination, say
        self.first_delay, self.max_delay = first_delay, max_delay
        self._ae = AE(ae_title=calling_ae)
        # The release writes Secondary Capture, explicit VR little endian (`privdiff.client.deid.stamp`).
        self._ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        self._ae.connection_timeout = 10
        self._failures = 0
        self._retry_at = 0.0

    def step(self) -> bool:
        """One round: send what is queued if the backoff allows. True if it sent something."""
        if time.monotonic() < self._retry_at:
            return False
        outputs = self.queue.pending_forwards(ROUND_SIZE)
        if not outputs:
            return False
        sent, error = self._send(outputs)
        if error:
            self.queue.forward_failed(outputs[sent:], error)
            self._failures += 1
            delay = min(self.max_delay, self.first_delay * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            self.say(
                f"archive {self.destination.ae_title}: {error}; {len(outputs) - sent} file(s) kept, "
                f"retrying in {delay:.0f} s"
            )
        else:
            self._failures = 0
        return sent > 0

    def _send(self, outputs: list[str]) -> tuple[int, str]:
        """Send `outputs` in order; how many the archive confirmed, and the error that stopped it."""
        d = self.destination
        tls = (d.tls, d.host) if d.tls is not None else None
        assoc = self._ae.associate(d.host, d.port, ae_title=d.ae_title, tls_args=tls)
        if not assoc.is_established:
            return 0, "association rejected" if assoc.is_rejected else "not reachable"
        sent = 0
        try:
            for output in outputs:
                path = self.release_dir / output
                if not path.is_file():
                    return sent, "a released file is missing from the release folder"
                status = assoc.send_c_store(path)
                code = status.get("Status") if status else None
                if code not in STORED:
                    return sent, "no answer (aborted)" if code is None else f"C-STORE status 0x{code:04X}"
                self.queue.forwarded(output)
                sent += 1
                self._delete(path)
            return sent, ""
        finally:
            if assoc.is_established:
                assoc.release()

    def _delete(self, path: Path) -> None:
        """The archive holds it now; empty series and study folders go with it."""
        path.unlink(missing_ok=True)
        root = self.release_dir / RELEASED_DIR
        with contextlib.suppress(OSError):
            for folder in (path.parent, path.parent.parent):
                if folder != root:
                    folder.rmdir()
