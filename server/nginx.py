"""The nginx reverse proxy that fences Flower's Control API off from the sites.

`NGINX_TEMPLATE` is deploy/nginx-fleet.conf (a test keeps the two identical); `render_nginx`
fills its placeholders for one federation (`privdiff federation init` writes the result).
"""

from __future__ import annotations

from pathlib import Path

FLEET_PREFIX = "/v1/fleet/"

NGINX_TEMPLATE = """# privdiff: expose ONLY Flower's Fleet API (what SuperNodes use) to the sites.
#
# Flower 1.42's SuperLink serves the Fleet API (/v1/fleet/*), the Control API (/v1/control/*:
# start runs, register nodes), the runtime API (/v1/runtime/*: its own ServerApp processes),
# /health and /docs on ONE port, and the Control API is not authenticated in open-source
# Flower: whoever reaches it can submit a run, i.e. run code at every site. So the SuperLink
# listens on loopback only and this proxy, on the public address, forwards /v1/fleet/ and
# refuses everything else. The operator runs `flwr` on the server itself (or via an SSH tunnel).
#
# `privdiff federation init` writes a copy with the placeholders filled in:
#   @PUBLIC_PORT@  port the sites connect to (privdiff-client start --superlink HOST:PORT)
#   @SUPERLINK@    the SuperLink's loopback address, e.g. 127.0.0.1:9091
#   @CERT@ @KEY@   the SuperLink's TLS certificate and key (the sites verify them with the CA)
#   @CA@           the federation CA, to verify the SuperLink behind the proxy
#   @TMP@          a folder nginx may write to (request buffers, pid file)
# Run it in the foreground: nginx -c /path/nginx-fleet.conf -p /path/ -g 'daemon off;'

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
        listen @PUBLIC_PORT@ ssl;
        listen [::]:@PUBLIC_PORT@ ssl;
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

        # Everything else (Control API, runtime API, /health, /docs): not for the sites.
        location / {
            return 403;
        }
    }
}
"""


def render_nginx(public_port: int, superlink: str, cert: Path, key: Path, ca: Path, tmp: Path) -> str:
    """The config for one deployment: sites connect to `public_port`; the SuperLink listens on
    the loopback address `superlink` (host:port)."""
    values = {
        "@PUBLIC_PORT@": str(public_port),
        "@SUPERLINK@": superlink,
        "@CERT@": str(cert),
        "@KEY@": str(key),
        "@CA@": str(ca),
        "@TMP@": str(tmp),
    }
    text = NGINX_TEMPLATE
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text
