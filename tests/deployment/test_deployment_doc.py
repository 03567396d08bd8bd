"""docs/deployment.md's "Try it on one host", run exactly as written.

The ```bash blocks of that section are taken from the file and run in order with bash, in a copy
of the checkout (what a user's `cd privdiff` is): blocks whose first line is `# terminal ...`
keep running (SuperLink, nginx, two sites) and are started in the background; every other block
must exit 0. A block that needs any editing fails the test. Between blocks the test only waits,
as a reader would, until a terminal is ready (its port listens, its site has connected).

The walk: a two-site kit from `privdiff federation init`, synthetic data, the SuperLink with TLS
and site authentication, the nginx fence, both sites registered and started, one SecAgg+ run of
the tiny config, the signed model installed at both sites, `verify` and a release at site_00.
Expect about 5-10 minutes on 2 cores. The trial uses the doc's fixed ports (9091, 9092, 9094,
9095): they must be free.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from processes import BIN, REPO, Processes, port_open, wait_for

DOC = REPO / "docs" / "deployment.md"
SECTION = "## Try it on one host"
# what `flwr run .` packages and what the doc's commands read from the checkout
CHECKOUT = (
    "pyproject.toml",
    ".gitignore",
    "README.md",
    "privdiff_core",
    "common",
    "server",
    "client",
    "configs",
)
TRIAL_PORTS = (9091, 9092, 9094, 9095)
NGINX_PUBLIC_PORT = 9092


def trial_blocks(text: str) -> list[str]:
    """The ```bash blocks of the one-host section, in order."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.S)


def keeps_running(block: str) -> bool:
    return block.lstrip().startswith("# terminal")


def test_the_trial_covers_the_whole_walk():
    blocks = trial_blocks(DOC.read_text())
    walk = "\n".join(blocks)
    for step in (
        "privdiff federation init --sites 2",
        "privdiff synth",
        "flower-superlink",
        "nginx",
        "flwr supernode register",
        "privdiff federation nodes",
        "flwr run . privdiff",
        "privdiff-client verify",
        "privdiff-client release",
    ):
        assert step in walk, step
    terminals = [b for b in blocks if keeps_running(b)]
    assert len(terminals) == 4 and sum("privdiff-client start" in b for b in terminals) == 2
    assert "federation.min_sites=2" in walk  # the run waits for the trial's two sites, not the config's 3


def _copy_checkout(to: Path) -> Path:
    to.mkdir()
    for name in CHECKOUT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, to / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.is_file():
            shutil.copy2(source, to / name)
    return to


def _run_block(block: str, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """One block as a user pastes it: bash, stop at the first failing command; bounded."""
    process = subprocess.Popen(
        ["bash", "-e", "-c", block],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as late:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=30)
        raise AssertionError(
            f"this block ran over {timeout:.0f} s:\n{block}\n--- output:\n{output[-4000:]}"
        ) from late
    assert process.returncode == 0, (
        f"this block failed ({process.returncode}):\n{block}\n--- output:\n{output[-4000:]}"
    )
    return output


def _wait_until_ready(block: str, name: str, procs: Processes) -> None:
    def alive() -> None:
        if procs.started[name].poll() is not None:
            raise AssertionError(
                f"{name} exited ({procs.started[name].returncode}):\n{block}\n{procs.log(name)[-4000:]}"
            )

    def ready() -> bool:
        alive()
        if "flower-superlink" in block:
            return port_open(int(re.search(r"--port (\d+)", block).group(1)))
        if "nginx" in block:
            return port_open(NGINX_PUBLIC_PORT)
        return "privdiff: connected to" in procs.log(name)

    wait_for(ready, 180, f"{name} to be ready")


@pytest.mark.slow
def test_the_one_host_trial_runs_as_written(tmp_path):
    busy = [port for port in TRIAL_PORTS if port_open(port)]
    assert not busy, f"the trial in docs/deployment.md uses fixed ports; in use on this machine: {busy}"
    checkout = _copy_checkout(tmp_path / "privdiff")
    env = dict(
        os.environ,
        HOME=str(tmp_path / "home"),  # Flower's app installs and privdiff's defaults stay in the test
        PYTHONUNBUFFERED="1",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
    )
    env.pop("FLWR_HOME", None)
    env.pop("PRIVDIFF_HOME", None)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    procs = Processes(tmp_path / "logs")
    outputs: dict[str, str] = {}
    try:
        for i, block in enumerate(trial_blocks(DOC.read_text())):
            if keeps_running(block):
                name = f"terminal-{i}"
                procs.start(name, ["bash", "-e", "-c", block], env, cwd=checkout)
                _wait_until_ready(block, name, procs)
            else:
                try:
                    outputs[f"block-{i}"] = _run_block(block, env, checkout, timeout=1500)
                except AssertionError as failed:  # what the block before it said (e.g. the run's stream)
                    before = list(outputs.values())[-1][-3000:] if outputs else ""
                    raise AssertionError(f"{failed}\n--- the block before it printed:\n{before}") from None
        walk = "\n".join(outputs.values())
        trial = checkout / "trial"

        # the operator sees node ids with the names given at registration
        assert re.search(r"^\d+\s+site_00\s+", walk, re.M) and re.search(r"^\d+\s+site_01\s+", walk, re.M)
        # one signed model, installed at both sites, verified again there and its config readable
        assert "installed at 2 of 2 sites" in walk, walk[-4000:]
        assert "signature OK" in walk and "  config:\n" in walk and "    image_size: 32\n" in walk
        summary = json.loads((trial / "release-site_00" / "release_summary.json").read_text())
        assert summary["counts"]["released"] > 0, summary["counts"]

        # the release's summary joins site_00's story; no file name, only counts
        log = (trial / "fed" / "sites" / "site_00" / "site.log").read_text()
        assert re.search(r"privdiff: release into release-site_00: released \d+, quarantined \d+", log)
        # each site's log file tells the story in privdiff's lines, without colour codes or empty lines
        for site in ("site_00", "site_01"):
            log = (trial / "fed" / "sites" / site / "site.log").read_text()
            for event in (
                "privdiff: connected to localhost:9092 as node",
                "trained on",
                "update sent masked",
            ):
                assert event in log, (site, event)
            assert re.search(r"privdiff: anonymizer \S+ installed in .* \(key id [0-9a-f]{16}\)", log), site
            assert "\x1b" not in log and not re.search(r"(INFO|DEBUG|WARNING)\s*:\s*$", log, re.M)
    finally:
        procs.stop_all()
