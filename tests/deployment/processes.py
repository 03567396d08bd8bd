"""Real Flower processes on 127.0.0.1 for the deployment tests: started in their own session,
logged to files, always stopped by PID (their whole process group), waits always bounded."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUIET = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """Every process a test starts; `stop_all()` in a finally block ends them and their children."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen] = {}

    def env(self, flwr_home: Path) -> dict[str, str]:
        env = dict(os.environ, **QUIET, FLWR_HOME=str(flwr_home))
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        return env

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process below)
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.started.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for process in self.started.values():  # children left in a group whose leader exited
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


def flwr(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The operator's `flwr` CLI (run in the repository, like `flwr run .`)."""
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def flwr_json(args: list[str], env: dict[str, str]) -> dict:
    result = flwr([*args, "--format", "json"], env)
    start = result.stdout.find("{")
    if start < 0:
        raise AssertionError(f"flwr {' '.join(args)} printed no JSON:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout[start:])


def submit_run(app: str, connection: str, run_config: str, env: dict[str, str]) -> str:
    """`flwr run APP CONNECTION --run-config ...` as the operator; returns the run id."""
    submitted = flwr(["run", app, connection, "--run-config", run_config], env, timeout=300)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return re.search(r"started run (\d+)", submitted.stdout).group(1)


def run_ended(env: dict[str, str], run_id: str) -> str:
    """The run's status once it has finished (finished:completed, finished:failed...), else ""."""
    runs = {r["run-id"]: r for r in flwr_json(["ls"], env)["runs"]}
    status = runs[run_id]["status"]
    return status if status.startswith("finished") else ""


def superlink_command(fed: Path, port: int) -> list[str]:
    """The SuperLink exactly as COMMANDS.md starts it: loopback, TLS, SuperNode authentication."""
    tls = fed / "superlink"
    return [
        str(BIN / "flower-superlink"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ssl-ca-certfile",
        str(tls / "ca.crt"),
        "--ssl-certfile",
        str(tls / "server.crt"),
        "--ssl-keyfile",
        str(tls / "server.key"),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
    ]


def nginx_command(fed: Path) -> list[str]:
    """nginx in the foreground with the config `federation init` wrote (its folder made here)."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert nginx, "this test needs nginx (apt-get install nginx-light); see docs/deployment.md"
    prefix = fed / "superlink" / "nginx"
    prefix.mkdir(exist_ok=True)
    conf = fed / "superlink" / "nginx-fleet.conf"
    return [nginx, "-e", "stderr", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]


def site_command(superlink: str, data: Path, bundle: Path | None, store: Path, port: int) -> list[str]:
    """`privdiff-client start` for one site; `bundle` None means a plaintext (--insecure) site."""
    command = [
        str(BIN / "privdiff-client"),
        "start",
        "--superlink",
        superlink,
        "--data",
        str(data),
        "--model-store",
        str(store),
        "--verifier",  # each site its own judges (the default, ~/.privdiff/verifier, is per host)
        str(store.parent / f"{store.name}-verifier"),
        "--port",
        str(port),
    ]
    if bundle is None:
        return [*command, "--insecure"]
    return [
        *command,
        "--root-certificates",
        str(bundle / "ca.crt"),
        "--auth-key",
        str(bundle / "auth_key"),
        "--public-key",
        str(bundle / "federation-public.pem"),
    ]


def online_nodes(env: dict[str, str]) -> set[int]:
    listing = flwr_json(["supernode", "list"], env)
    return {int(n["node-id"]) for n in listing.get("nodes", []) if n.get("status") == "online"}
