"""Stand-in internet sites for the lab: each name answers 200 on :80 and :443 with a body naming it.

Run inside the lab's internet namespace by :mod:`tproxy_nb.lab`::

    python -m tproxy_nb.lab.standin --certs DIR --ready FILE --site www.google.com=198.18.1.10 \\
        --site www.google.com=2001:db8:1::10

A site may be given several times, once per address (IPv4 or IPv6).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def body_for(name: str) -> bytes:
    """What the stand-in for ``name`` answers, so a test can tell who answered."""
    return f"Hello from {name} (tproxy-nb lab stand-in)\n".encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "tproxy-nb-standin/1"
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = body_for(self.server.site)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.server.site} {self.client_address[0]} {fmt % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, site: str, tls: ssl.SSLContext | None):
        self.site = site
        self.tls = tls
        # An instance attribute before binding: the socket's family follows the address.
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, _Handler)

    def get_request(self):
        conn, peer = super().get_request()
        # Without TCP_NODELAY every response waits ~40 ms on Nagle + delayed ACK.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(10)
        return conn, peer

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, so a slow client blocks nobody.
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                sys.stderr.write(f"{self.site} {client_address[0]} TLS handshake failed: {e}\n")
                return
        super().finish_request(request, client_address)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--certs", required=True, type=Path, help="directory with NAME.crt and NAME.key")
    ap.add_argument("--ready", required=True, type=Path, help="file written once every socket listens")
    ap.add_argument("--site", action="append", required=True, help="NAME=ADDRESS (IPv4 or IPv6; repeatable)")
    args = ap.parse_args(argv)
    servers = []
    for spec in args.site:
        name, addr = spec.split("=", 1)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.certs / f"{name}.crt", args.certs / f"{name}.key")
        servers.append(_Server((addr, 80), name, None))
        servers.append(_Server((addr, 443), name, ctx))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    args.ready.write_text("ready\n")
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
