"""The node's release process: `run_release` for each batch the releaser sends it.

Spawned (not forked: the release forks reader processes, which must not inherit the SCP's threads)
and kept across batches, so its imports (torch, diffusers: seconds) are paid once per node. This
module imports only the standard library at its top: the process asks the kernel to end it with
the node (kill -9 included) within moments of starting, before the heavy imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privdiff_core.logs import LogSetup

_PR_SET_PDEATHSIG = 1
EXIT_NOT_COMPLETED = 2  # the release raised: the node retries the batch later


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the node dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def release_worker(
    jobs: Connection, lock_path: Path, parent: int, threads: int | None, log_setup: LogSetup
) -> None:
    """The release process: imports once, then one `run_release` per batch it is sent, answering
    each with the release's exit status, until the node closes the pipe or dies. It logs where the
    node does (`log_setup`): a spawned process starts without the node's logging configuration."""
    _die_with_parent()
    if os.getppid() != parent:  # the node died before the line above took effect
        os._exit(EXIT_NOT_COMPLETED)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    from privdiff.client.release_pipeline import run_release
    from privdiff_core.errors import PrivdiffError
    from privdiff_core.logs import configure_logging, logger

    configure_logging(*log_setup)
    log = logger("serve.release")

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    while True:
        try:
            settings = jobs.recv()
        except EOFError:
            return
        # One release at a time into the release folder, whatever happened to an earlier node.
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                status = run_release(settings, log).exit_status
            except PrivdiffError as err:
                log.error(str(err))
                status = EXIT_NOT_COMPLETED
            except Exception as err:  # noqa: BLE001 -- the node retries the batch; say what kind of error
                log.error(type(err).__name__)
                status = EXIT_NOT_COMPLETED
        jobs.send(status)
