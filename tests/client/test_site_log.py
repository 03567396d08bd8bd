"""client/site_log.py: a site's log without colour codes or empty lines, with privdiff's events,
and one line of advice for each Flower failure it recognises."""

from __future__ import annotations

import io

from privdiff.client.site_log import SiteLog

FACTS = {
    "superlink": "fl.example.org:9092",
    "auth_key": "/opt/privdiff/site_00/auth_key",
    "port": "9094",
    "key_name": "privdiff-site_00",
}

# What flower-supernode 1.42 printed for a site whose key was never registered (colour codes kept).
UNREGISTERED = [
    "\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode",
    "\x1b[92mINFO \x1b[0m:      ",
    "INFO:     Uvicorn running on http://127.0.0.1:9095 (Press CTRL+C to quit)",
    "\x1b[91mERROR \x1b[0m:     Exit Code: 305",
    "Failed to initialize the connection to the SuperLink.",
    "[code: 2004] Failed to activate SuperNode.",
    "The SuperNode could not establish a connection to the SuperLink.",
]


def test_colour_codes_and_empty_lines_never_reach_the_terminal_or_the_file(tmp_path):
    out = io.StringIO()
    log = SiteLog(FACTS, tmp_path / "site.log", out)
    for line in ["\x1b[92mINFO \x1b[0m:      ", "\x1b[92mINFO \x1b[0m:      [RUN 7, ROUND 1]", "", "INFO :"]:
        log.feed(line + "\n")
    log.close()
    assert out.getvalue() == "INFO :      [RUN 7, ROUND 1]\n"
    lines = (tmp_path / "site.log").read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" INFO :      [RUN 7, ROUND 1]") and "\x1b" not in lines[0]


def test_the_node_id_becomes_a_connected_event():
    out = io.StringIO()
    log = SiteLog(FACTS, None, out)
    log.feed("\x1b[92mINFO \x1b[0m:      SuperNode ID: 2659390073855654107\n")
    assert log.node_id == 2659390073855654107
    assert (
        "privdiff: connected to fl.example.org:9092 as node 2659390073855654107 (site key privdiff-site_00)"
        in out.getvalue()
    )
    assert log.advice is None


def test_an_unregistered_key_gets_the_register_command_not_the_generic_connection_error():
    log = SiteLog(FACTS, None, io.StringIO())
    for line in UNREGISTERED:  # "Exit Code: 305" (could not connect) comes first, 2004 says why
        log.feed(line)
    assert log.advice.startswith("the server refused this site's key (Flower code 2004")
    assert "flwr supernode register /opt/privdiff/site_00/auth_key.pub privdiff" in log.advice


def test_each_known_failure_has_its_own_advice():
    cases = {
        "ERROR :     SSL/TLS handshake error detected.": "--root-certificates must be ca.crt",
        "ERROR :     Exit Code: 302": "--auth-key /opt/privdiff/site_00/auth_key",
        "OSError: [Errno 98] Address already in use": "port 9094 is in use",
        "[code: 1001] Runtime version incompatible": "same privdiff and flwr versions",
        "[code: 2009] Failed to get FAB": "Flower code 2009",
        "ERROR :     Exit Code: 305": "could not connect to fl.example.org:9092",
    }
    for line, advice in cases.items():
        log = SiteLog(FACTS, None, io.StringIO())
        log.feed(line)
        assert log.advice is not None and advice in log.advice, line
