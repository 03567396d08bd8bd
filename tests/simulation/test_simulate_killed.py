"""A simulation whose process is killed outright (SIGKILL, no clean-up) resumes where it stopped.

`privdiff simulate` runs in its own process group; as soon as it reports the first completed
round, the whole group (the ServerApp's process and Ray's) is killed. The same command run again
must pick up the round-1 checkpoint, train only the rounds that are missing, and finish with a
signed anonymizer, reusing the synthetic federation it had already made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from privdiff.server.checkpoint import CHECKPOINT_FILE
from privdiff_core.cli import main as privdiff
from privdiff_core.signing import load_public_key, verify_model

pytestmark = pytest.mark.slow

PLAN = ["federation.rounds.autoencoder=2", "federation.rounds.denoiser=1"]
FIRST_ROUND = "[autoencoder 1/2]"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_simulation_resumes_from_its_last_completed_round(tmp_path, capsys, isolated_home):
    run = tmp_path / "run"
    command = ["simulate", "--config", "tiny", "--no-evaluate", "--no-progress", f"out={run}", *PLAN]
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from privdiff_core.cli import main; sys.exit(main())",
                *command,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: Ray's processes die with it
        )
    try:
        deadline = time.monotonic() + 600
        while FIRST_ROUND not in log.read_text():
            assert process.poll() is None, f"simulate ended before its first round:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no first round in 600 s:\n{log.read_text()}"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # the server machine loses power mid-run
        process.wait(timeout=30)
        for _ in range(100):  # the kernel reaps the group's other processes asynchronously
            if not _group_alive(process.pid):
                break
            time.sleep(0.1)
        assert not _group_alive(process.pid)
    finally:
        if process.poll() is None or _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    killed = torch.load(run / CHECKPOINT_FILE, weights_only=True)
    assert killed["rounds_done"]["autoencoder"] >= 1 and not killed["completed"]
    assert not (run / "anonymizer").exists()
    synth_key = (run / "synth-key.json").stat().st_mtime_ns
    done = sum(killed["rounds_done"].values())

    assert privdiff(command) == 0
    captured = capsys.readouterr()  # the rounds are in the log, on stderr
    lines = [line.removeprefix("privdiff simulate: ") for line in captured.err.splitlines()]
    assert any(f"resuming {run}: {done} of 3 rounds done" in line for line in lines)
    trained = [line.split("]")[0] + "]" for line in lines if line.startswith("[")]
    expected = ["[autoencoder 2/2]", "[denoiser 1/1]"][done - 1 :]
    assert trained == expected  # nothing that the checkpoint holds is trained again
    assert (run / "synth-key.json").stat().st_mtime_ns == synth_key  # the federation was reused

    history = torch.load(run / CHECKPOINT_FILE, weights_only=True)["history"]
    assert [(h["round"], h["stage"]) for h in history] == [
        (1, "autoencoder"),
        (2, "autoencoder"),
        (3, "denoiser"),
    ]
    assert history[:done] == killed["history"]
    metadata = verify_model(run / "anonymizer", load_public_key(run / "keys" / "model-signing.pub"))[
        "metadata"
    ]
    assert metadata["rounds"] == {"autoencoder": 2, "denoiser": 1}
    assert not (isolated_home / ".flwr").exists()
