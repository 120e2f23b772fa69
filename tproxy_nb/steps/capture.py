"""A packet capture on the target's loopback while requests run: tcpdump between the app and the sidecar.

tcpdump runs in ``--immediate-mode``: otherwise the kernel hands it packets in blocks, and the last
requests' packets, still in an unfinished block when it is stopped, are lost.

tcpdump runs as root on the target in the background, writing a pcap file under ``paths.run``; stopping
it returns ``tcpdump -nn -tt -r`` text, which :mod:`tproxy_nb.analysis.packets` reads.

Example::

    with capturing(host, s) as cap:
        check.run_cases(host, s)
    packets.parse_tcpdump(cap.text)
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import StepError
from ..remote.host import Host, which
from ..settings import Settings

#: Seconds to wait for tcpdump to say it is listening, and for it to exit once told to stop.
READY_S, STOP_S = 5, 5


def require_tcpdump(host: Host, install: bool = True) -> None:
    """Make sure tcpdump is on the target; install it with apt when missing (and ``install``).

    Raises :class:`StepError` when it is missing and cannot be installed (apt may not reach the internet).

    Example: ``require_tcpdump(host)``.
    """
    if which(host, ["tcpdump"], sudo=True)["tcpdump"] is not None:
        return
    if install:
        r = host.run(
            ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "tcpdump"],
            sudo=True,
            check=False,
            timeout=600,
        )
        if r.ok:
            return
        why = r.tail(2, "stderr") or r.tail(2)
    else:
        why = "not installed"
    raise StepError(
        f"tcpdump is missing on {host.hostname} and could not be installed ({why}). Install it there "
        "(sudo apt-get install -y tcpdump, or copy the .deb over if the host has no internet), then capture again. "
        "The requests themselves need no capture: run them without it."
    )


def capture_filter(settings: Settings) -> str:
    """The BPF filter: TCP on loopback except the Envoys' own traffic to the gateways and admin ports.

    What is left is app <-> sidecar. The sidecar's answers show with the address the app asked for
    (e.g. ``198.18.200.10.443``): conntrack undoes the REDIRECT before they reach loopback.

    Example: ``capture_filter(s)`` -> ``"tcp and not (port 12010 or port 12011 or port 9901 or ...)"``.
    """
    p = settings.ports
    ports = (p.igw, p.igw_http, p.admin_sidecar, p.admin_igw, p.admin_igw_http)
    return "tcp and not (" + " or ".join(f"port {x}" for x in ports) + ")"


@dataclass
class Capture:
    """A running (then finished) capture: the pcap path on the target, tcpdump's PID, and the text once stopped."""

    path: str
    pid: int
    text: str = ""


def start(host: Host, settings: Settings) -> Capture:
    """Start tcpdump on the target's loopback; return once it listens.

    Example: ``cap = start(host, s); ...; stop(host, cap)``.
    """
    require_tcpdump(host)
    path = f"{settings.paths.run}/capture.pcap"
    q = shlex.quote
    script = (
        f"rm -f {q(path)} {q(path + '.err')}; "
        f"setsid tcpdump -i lo -nn -U --immediate-mode -Z root -w {q(path)} {q(capture_filter(settings))} "
        f"</dev/null >/dev/null 2>{q(path + '.err')} & echo $!; "
        f"i=0; while [ $i -lt {READY_S * 10} ] && ! grep -q 'listening on' {q(path + '.err')}; do "
        "sleep 0.1; i=$((i+1)); done; "
        f"grep -q 'listening on' {q(path + '.err')} || {{ cat {q(path + '.err')} >&2; exit 3; }}"
    )
    r = host.run(script, sudo=True, check=False, timeout=READY_S + 30)
    pid = r.stdout.split()[0] if r.stdout.split() else ""
    if not r.ok or not pid.isdigit():
        raise StepError(f"tcpdump did not start on {host.hostname}: {r.tail(3, 'stderr') or 'no output'}.")
    return Capture(path, int(pid))


def stop(host: Host, cap: Capture) -> Capture:
    """Stop tcpdump (SIGINT, so it flushes), read the capture as text into ``cap.text``, remove the file.

    Example: ``stop(host, cap).text.splitlines()[0]``.
    """
    q = shlex.quote
    script = (
        f"kill -INT {cap.pid} 2>/dev/null; i=0; "
        f"while [ $i -lt {STOP_S * 10} ] && kill -0 {cap.pid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
        f"kill -KILL {cap.pid} 2>/dev/null; "
        f"tcpdump -nn -tt -r {q(cap.path)} 2>/dev/null; rm -f {q(cap.path)} {q(cap.path + '.err')}"
    )
    cap.text = host.run(script, sudo=True, check=False, timeout=STOP_S + 60).stdout
    return cap


@contextmanager
def capturing(host: Host, settings: Settings) -> Iterator[Capture]:
    """Capture app <-> sidecar packets while the block runs; ``.text`` holds them afterwards (also on error).

    Example: ``with capturing(host, s) as cap: run_cases(host, s)``.
    """
    cap = start(host, settings)
    try:
        yield cap
    finally:
        stop(host, cap)
