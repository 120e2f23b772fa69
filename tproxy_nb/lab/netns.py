"""Network namespaces and veth pairs for the lab's extra hosts (the bastion, the rootfs host).

Example::

    veth(End("tpx-b0", None, "198.18.2.1/30"), End("tpx-b1", "tpx-bastion", "198.18.2.2/30"))
    names()   # {"tpx-host", "tpx-inet", "tpx-bastion"}
"""

from __future__ import annotations

from typing import NamedTuple

from . import core


class End(NamedTuple):
    """One end of a veth pair: its name, its namespace (None: the root one) and its addresses (with prefix)."""

    name: str
    ns: str | None
    addrs: tuple[str, ...] | str


def veth(left: End, right: End) -> None:
    """A veth pair: each end goes into its namespace, gets its addresses (IPv6 without the DAD delay) and goes up."""
    where = {e.name: ["netns", e.ns] if e.ns else [] for e in (left, right)}
    core._run(
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
        inside = (lambda *args, ns=end.ns: core._ns(ns, *args)) if end.ns else (lambda *args: list(args))
        for addr in (end.addrs,) if isinstance(end.addrs, str) else end.addrs:
            # nodad: usable at once, not "tentative" for the duplicate-address check's second.
            extra = ["nodad"] if ":" in addr else []
            core._run(inside("ip", "addr", "add", addr, "dev", end.name, *extra))
        core._run(inside("ip", "link", "set", end.name, "up"))


def names() -> set[str]:
    """Every network namespace that exists now (ours and others')."""
    p = core._run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in p.stdout.splitlines() if line.strip()}


def link_exists(name: str, ns: str | None = None) -> bool:
    """True when the link ``name`` exists (in namespace ``ns``, else the root one)."""
    cmd = ["ip", "link", "show", name]
    return core._run(core._ns(ns, *cmd) if ns else cmd, check=False).returncode == 0


def remove(ns: str, pid: int | None, root_veth: str, far_end: tuple[str, str]) -> list[str]:
    """Take down a lab host's network: its process ``pid`` and every process in ``ns`` (by PID), ``ns`` itself,
    and the veths that lead to it (``root_veth`` here, ``far_end`` = (namespace, veth) in a neighbour).

    Deleting the namespace takes its veths along; the two veths are looked for to catch a half-built host.
    Returns what was removed (empty when nothing was there).

    Example: ``remove("tpx-bastion", 4242, "tpx-b0", ("tpx-host", "tpx-b3"))``.
    """
    removed = []
    pids = core.namespace_pids(ns) if ns in names() else []
    if pid is not None and core._pid_alive(pid) and pid not in pids:
        pids.insert(0, pid)
    if pids:
        core._kill_pids(pids)
        removed.append(f"{len(pids)} process(es) of {ns}")
    if ns in names():
        core._run(["ip", "netns", "del", ns], check=False)
        removed.append(f"namespace {ns}")
    if link_exists(root_veth):
        core._run(["ip", "link", "del", root_veth], check=False)
        removed.append(f"veth {root_veth}")
    far_ns, far_veth = far_end
    if far_ns in names() and link_exists(far_veth, far_ns):
        core._run(core._ns(far_ns, "ip", "link", "del", far_veth), check=False)
        removed.append(f"veth {far_veth}")
    return removed
