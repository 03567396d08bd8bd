"""The nginx reverse proxy that fences Flower's Control API off from the sites.

`NGINX_TEMPLATE` is deploy/nginx-fleet.conf (a test keeps the two identical); `render_nginx`
fills its placeholders for one federation (`privdiff federation init` writes the result).
"""

# ruff: noqa: E501  (nginx config text: the refusal message is one nginx string on one line)
from __future__ import annotations

from pathlib import Path

FLEET_PREFIX = "/v1/fleet/"

HEADER = """# privdiff: expose ONLY Flower's Fleet API (what SuperNodes use) to the sites.
#
# Flower 1.42's SuperLink serves the Fleet API (/v1/fleet/*), the Control API (/v1/control/*:
# start runs, register nodes), the runtime API (/v1/runtime/*: its own ServerApp processes),
# /health and /docs on ONE port, and the Control API is not authenticated in open-source
# Flower: whoever reaches it can submit a run, i.e. run code at every site. So the SuperLink
# listens on loopback only and this proxy, on the public address, forwards /v1/fleet/ and
# refuses everything else. The operator runs `flwr` on the server itself (or via an SSH tunnel).
#
"""

# What the placeholders mean: in the template only, a filled-in copy says where it came from.
PLACEHOLDER_NOTES = """# `privdiff federation init` writes a copy with the placeholders filled in:
#   @LISTEN@       the public address and port the sites connect to, e.g. 9092 (every
#                  interface) or 192.0.2.10:9092 (privdiff federation init --bind)
#   @SUPERLINK@    the SuperLink's loopback address, e.g. 127.0.0.1:9091
#   @CERT@ @KEY@   the SuperLink's TLS certificate and key (the sites verify them with the CA)
#   @CA@           the federation CA, to verify the SuperLink behind the proxy
#   @TMP@          a folder nginx may write to (request buffers, pid file)
#   @FLWR_HOME@    the operator's flwr configuration (named in the refusal of other paths)
# Run it in the foreground with absolute paths (nginx reads -c relative to -p):
#   nginx -p /abs/tmp -c /abs/nginx-fleet.conf -e stderr -g 'daemon off;'
"""

BODY = """
worker_processes 1;
pid @TMP@/nginx.pid;
error_log @TMP@/error.log warn;

events {
    worker_connections 256;
}

http {
    access_log @TMP@/access.log;
    client_body_temp_path @TMP@/client_body;
    proxy_temp_path @TMP@/proxy;
    fastcgi_temp_path @TMP@/fastcgi;
    uwsgi_temp_path @TMP@/uwsgi;
    scgi_temp_path @TMP@/scgi;

    server {
        listen @LISTEN@ ssl;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_protocols TLSv1.2 TLSv1.3;

        # Model updates travel in 5 MB chunks (push-object); leave headroom.
        client_max_body_size 64m;

        # Fleet API: node registration, heartbeats, messages and their objects. Requests stay
        # signed by each site's key (flwr-public-key / flwr-signature headers, passed through).
        location /v1/fleet/ {
            limit_except POST { deny all; }
            proxy_pass https://@SUPERLINK@;
            proxy_http_version 1.1;
            proxy_ssl_trusted_certificate @CA@;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }

        # Everything else (Control API, runtime API, /health, /docs): not for the sites. The
        # reason goes back as JSON {"detail": ...}, which the flwr CLI prints instead of a bare 403.
        location / {
            default_type application/json;
            return 403 '{"detail": "privdiff: this port serves only the Fleet API (/v1/fleet/, for SuperNodes); the Control API (flwr run, flwr supernode ...) is fenced off the network. Run flwr on the server itself, against the SuperLink at @SUPERLINK@ (FLWR_HOME=@FLWR_HOME@)."}';
        }
    }
}
"""


NGINX_TEMPLATE = HEADER + PLACEHOLDER_NOTES + BODY


def listen_addresses(bind: str, port: int) -> list[str]:
    """nginx `listen` addresses for `bind`: "*" is every IPv4 and IPv6 interface, else one address."""
    if bind in ("*", "", "0.0.0.0", "::"):
        return [str(port), f"[::]:{port}"]
    if ":" in bind:  # an IPv6 address goes in brackets
        return [f"[{bind.strip('[]')}]:{port}"]
    return [f"{bind}:{port}"]


def render_nginx(
    bind: str,
    public_port: int,
    superlink: str,
    cert: Path,
    key: Path,
    ca: Path,
    tmp: Path,
    flwr_home: Path,
) -> str:
    """The config for one deployment: sites connect to `bind`:`public_port` ("*": every
    interface); the SuperLink listens on the loopback address `superlink` (host:port)."""
    listen = "\n        ".join(f"listen {address} ssl;" for address in listen_addresses(bind, public_port))
    values = {
        "listen @LISTEN@ ssl;": listen,
        "@SUPERLINK@": superlink,
        "@CERT@": str(cert),
        "@KEY@": str(key),
        "@CA@": str(ca),
        "@TMP@": str(tmp),
        "@FLWR_HOME@": str(flwr_home),
    }
    # the placeholder notes would read as nonsense once filled in: say where the copy came from
    text = HEADER + "# Written by `privdiff federation init` from deploy/nginx-fleet.conf.\n" + BODY
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text
