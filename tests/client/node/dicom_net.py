"""Real DICOM peers on 127.0.0.1 for the node tests: DCMTK's tools (a PACS and a research archive
that are not ours) and pynetdicom's SCU, plus the deployment tests' process helpers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Verification

# free_port, wait_for and Processes (started in their own session, stopped by PID) are the
# deployment tests'; one copy serves both folders.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deployment"))
from processes import Processes, free_port, port_open, wait_for  # noqa: E402

__all__ = ["Processes", "free_port", "port_open", "wait_for"]


def dcmtk(tool: str) -> str:
    """A DCMTK binary. pynetdicom installs Python apps with the same names (storescu, storescp,
    echoscu) into the venv's bin, ahead on PATH: DCMTK's are found next to its `dcmdump`."""
    dcmdump = shutil.which("dcmdump")
    assert dcmdump, "these tests need DCMTK (apt-get install dcmtk; .ci/system-packages does it)"
    return str(Path(dcmdump).parent / tool)


def storescu(
    files: list[Path], port: int, calling: str, called: str = "PRIVDIFF", propose: str = "-xy"
) -> subprocess.CompletedProcess:
    """DCMTK's storescu as a PACS sends: one association whose contexts (-R) carry the compressed
    syntax the files hold (`propose`, -xy: JPEG baseline) and every uncompressed one."""
    command = [dcmtk("storescu"), "-R", propose, "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(
        command + [str(path) for path in files], capture_output=True, text=True, timeout=120, check=False
    )


def echoscu(port: int, calling: str, called: str = "PRIVDIFF") -> subprocess.CompletedProcess:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def storescp_command(port: int, folder: Path, ae_title: str = "ARCHIVE") -> list[str]:
    """DCMTK's storescp as the research archive; +uf gives every received object its own file,
    so an instance sent twice shows up as two files."""
    folder.mkdir(parents=True, exist_ok=True)
    return [dcmtk("storescp"), "-aet", ae_title, "+uf", "-od", str(folder), str(port)]


def pynetdicom_store(files: list[Path], port: int, calling: str, called: str = "PRIVDIFF") -> list[int]:
    """pynetdicom's own SCU: the C-STORE status of each file (-1: no answer)."""
    datasets = [pydicom.dcmread(path) for path in files]
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "the node did not accept the association"
    try:
        statuses = []
        for ds in datasets:
            answer = assoc.send_c_store(ds)
            statuses.append(int(answer.Status) if answer else -1)
        return statuses
    finally:
        assoc.release()


def pynetdicom_echo(port: int, calling: str, called: str = "PRIVDIFF", tls=None) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.connection_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls)
    if not assoc.is_established:
        return False
    try:
        answer = assoc.send_c_echo()
        return bool(answer) and answer.Status == 0
    finally:
        assoc.release()


def archived(folder: Path) -> list[pydicom.Dataset]:
    """Every object the archive stored (finished files only: storescp writes, then closes)."""
    return [pydicom.dcmread(path) for path in sorted(folder.iterdir()) if path.is_file()]
