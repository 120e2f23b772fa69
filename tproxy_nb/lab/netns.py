"""Commands, processes, network namespaces and veth pairs: what every lab host is built from.

The lab's host (``core``), the bastion and the rootfs host all run their commands through :func:`run`
(one paragraph on failure), stop their processes by PID (:func:`kill_pids`, never by name) and wire
themselves with :func:`veth`; :func:`remove` takes a host's network down again.

Example::

    run(["ip", "netns", "add", "tpx-bastion"])
    veth(End("tpx-b0", None, "198.18.2.1/30"), End("tpx-b1", "tpx-bastion", "198.18.2.2/30"))
    remove("tpx-bastion", read_pid(Path("/var/lib/tproxy-nb-lab/bastion/sshd.pid")), "tpx-b0", ("tpx-host", "tpx-b3"))
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import LabError


def run(
    args: list[str], check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run a command here; a missing program, a timeout or (with ``check``) a failure is a :class:`LabError`.

    Example: ``run(["ip", "netns", "list"], check=False).stdout``.
    """
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError:
        raise LabError(
            f"{args[0]} is not installed; the lab needs iproute2, iptables, openssh-server, sudo and curl. "
            "Run 'make test' or 'make run' (they install them), or apt-get install them."
        ) from None
    except subprocess.TimeoutExpired:
        raise LabError(f"'{' '.join(args)}' did not finish within {timeout:g} s while building the lab.") from None
    if check and p.returncode != 0:
        raise LabError(f"'{' '.join(args)}' failed (exit {p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def in_ns(ns: str, *args: str) -> list[str]:
    """``args`` as a command run inside network namespace ``ns``.

    Example: ``in_ns("tpx-host", "ip", "addr")`` -> ``["ip", "netns", "exec", "tpx-host", "ip", "addr"]``.
    """
    return ["ip", "netns", "exec", ns, *args]


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (a zombie does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    """The PID recorded in ``path``, or None when there is none."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_pids(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM each PID, wait up to ``grace`` seconds, then SIGKILL whatever still runs."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def namespace_pids(ns: str) -> list[int]:
    """PIDs of every process inside namespace ``ns``."""
    p = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def names() -> set[str]:
    """Every network namespace that exists now (ours and others')."""
    p = run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in p.stdout.splitlines() if line.strip()}


def link_exists(name: str, ns: str | None = None) -> bool:
    """True when the link ``name`` exists (in namespace ``ns``, else the root one)."""
    cmd = ["ip", "link", "show", name]
    return run(in_ns(ns, *cmd) if ns else cmd, check=False).returncode == 0


class End(NamedTuple):
    """One end of a veth pair: its name, its namespace (None: the root one) and its addresses (with prefix)."""

    name: str
    ns: str | None
    addrs: tuple[str, ...] | str


def veth(left: End, right: End) -> None:
    """A veth pair: each end goes into its namespace, gets its addresses (IPv6 without the DAD delay) and goes up."""
    where = {e.name: ["netns", e.ns] if e.ns else [] for e in (left, right)}
    run(
        [
            "ip",
            "link",
            "add",
            left.name,
            *where[left.name],
            "type",
            "veth",
            "peer",
            "name",
            right.name,
            *where[right.name],
        ]
    )
    for end in (left, right):
        inside = (lambda *args, ns=end.ns: in_ns(ns, *args)) if end.ns else (lambda *args: list(args))
        for addr in (end.addrs,) if isinstance(end.addrs, str) else end.addrs:
            # nodad: usable at once, not "tentative" for the duplicate-address check's second.
            extra = ["nodad"] if ":" in addr else []
            run(inside("ip", "addr", "add", addr, "dev", end.name, *extra))
        run(inside("ip", "link", "set", end.name, "up"))


def remove(ns: str, pid: int | None, root_veth: str, far_end: tuple[str, str]) -> list[str]:
    """Take down a lab host's network: its process ``pid`` and every process in ``ns`` (by PID), ``ns`` itself,
    and the veths that lead to it (``root_veth`` here, ``far_end`` = (namespace, veth) in a neighbour).

    Deleting the namespace takes its veths along; the two veths are looked for to catch a half-built host.
    Returns what was removed (empty when nothing was there).

    Example: ``remove("tpx-bastion", 4242, "tpx-b0", ("tpx-host", "tpx-b3"))``.
    """
    removed = []
    pids = namespace_pids(ns) if ns in names() else []
    if pid is not None and pid_alive(pid) and pid not in pids:
        pids.insert(0, pid)
    if pids:
        kill_pids(pids)
        removed.append(f"{len(pids)} process(es) of {ns}")
    if ns in names():
        run(["ip", "netns", "del", ns], check=False)
        removed.append(f"namespace {ns}")
    if link_exists(root_veth):
        run(["ip", "link", "del", root_veth], check=False)
        removed.append(f"veth {root_veth}")
    far_ns, far_veth = far_end
    if far_ns in names() and link_exists(far_veth, far_ns):
        run(in_ns(far_ns, "ip", "link", "del", far_veth), check=False)
        removed.append(f"veth {far_veth}")
    return removed
