"""A site's log: what `privdiff-client start` shows and keeps of its SuperNode's output.

Flower's SuperNode writes coloured log lines (ANSI codes even into a file), dozens of empty
`INFO :` lines, and reports a refused site as a bare error code. Every line of the SuperNode and
of the ClientApp processes it starts passes through `SiteLog`, which

- strips colour codes and drops empty lines;
- adds privdiff's own events: `privdiff: connected as node N` here, and the ClientApp's lines
  (`event()`: round trained, update sent masked, anonymizer installed);
- writes each line to the terminal and, with a timestamp, to the site's log file (where
  `privdiff-client release --log` adds its summary: `append_event`);
- turns each Flower failure it recognises into one line of advice (`SiteLog.advice`).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TextIO

EVENT_PREFIX = "privdiff: "

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EMPTY = re.compile(r"^\s*(DEBUG|INFO|WARNING|ERROR|CRITICAL)?\s*:?\s*$")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")

# Flower output -> advice, most specific first. Placeholders come from `SiteLog.facts`.
ADVICE: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\[code: 2004\]"),
        "the server refused this site's key (Flower code 2004: not registered). On the server run "
        "`flwr supernode register {auth_key}.pub privdiff --name SITE` (FLWR_HOME=FEDERATION/flwr-home), "
        "then start this site again",
    ),
    (
        re.compile(r"\[code: 2001\]"),
        "the server does not let sites register themselves (Flower code 2001): the operator "
        "registers this site's auth_key.pub with `flwr supernode register`",
    ),
    (
        re.compile(r"\[code: 200[89]\]"),
        "the server could not hand out the run or its app (Flower code {code}): the run was "
        "probably stopped; this site connects to the next one",
    ),
    (
        re.compile(r"\[code: 1001\]|Exit Code: 606"),
        "the site's and the server's Flower versions do not match (Flower code 1001): install the "
        "same privdiff and flwr versions as the server",
    ),
    (
        re.compile(r"SSL/TLS handshake error|CERTIFICATE_VERIFY_FAILED|certificate verify failed"),
        "the TLS handshake with {superlink} failed: --root-certificates must be ca.crt of this "
        "federation and --superlink the name in the server's certificate",
    ),
    (
        re.compile(r"Exit Code: 302"),
        "Flower could not use --auth-key {auth_key}: pass the site's private key auth_key (EC P-384, "
        "OpenSSH) from its bundle",
    ),
    (
        re.compile(r"[Aa]ddress already in use"),
        "port {port} is in use on this host (another site's SuperNode?): give each site its own --port",
    ),
    (
        re.compile(r"Exit Code: 305"),
        "the SuperNode could not connect to {superlink}: see the lines above; is the server's nginx running?",
    ),
)


def event(message: str) -> None:
    """One line of the site's story (printed by the ClientApp; the SuperNode passes it on)."""
    print(EVENT_PREFIX + message, flush=True)


def stamped(line: str) -> str:
    """A log file's line: local time first."""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n"


def append_event(log_file: Path, message: str) -> None:
    """Add one event to a site's log file from another command (e.g. a release's summary)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as handle:
        handle.write(stamped(EVENT_PREFIX + message))


class SiteLog:
    """Cleans, shows and keeps the SuperNode's output; remembers the first advice it matched."""

    def __init__(self, facts: dict[str, str], log_file: Path | None = None, out: TextIO | None = None):
        self.facts = facts
        self.out = out or sys.stdout
        self.file = open(log_file, "a", encoding="utf-8", buffering=1) if log_file else None  # noqa: SIM115
        self.advice: str | None = None
        self._rank = len(ADVICE)  # the most specific advice wins: 2004 over "could not connect"
        self.node_id: int | None = None

    def write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()
        if self.file:
            self.file.write(stamped(line))

    def feed(self, raw: str) -> None:
        """One raw line of SuperNode output."""
        line = _ANSI.sub("", raw).rstrip()
        if _EMPTY.match(line):
            return
        self.write(line)
        if (found := _NODE_ID.search(line)) and self.node_id is None:
            self.node_id = int(found.group(1))
            key = self.facts.get("key_name")
            self.write(
                f"{EVENT_PREFIX}connected to {self.facts['superlink']} as node {self.node_id}"
                + (f" (site key {key})" if key else "")
            )
        for rank, (pattern, text) in enumerate(ADVICE[: self._rank]):
            if found := pattern.search(line):
                code = re.search(r"\d{4}", found.group(0))
                self.advice = text.format(**self.facts, code=code.group(0) if code else "")
                self._rank = rank
                break

    def close(self) -> None:
        if self.file:
            self.file.close()
