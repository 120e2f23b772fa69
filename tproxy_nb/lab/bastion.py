"""A jump host for the lab: its own namespace and ``sshd``, between this machine and the lab's host.

::

    root namespace              tpx-bastion                          tpx-host
    tpx-b0 198.18.2.1/30 ────── tpx-b1 198.18.2.2/30  sshd :22
                                tpx-b2 198.18.3.1/30 ─────────────── tpx-b3 198.18.3.2/30
                                route 198.18.0.2 via 198.18.3.2      (sshd on 198.18.0.2)

A connection through it reaches the host's sshd from 198.18.3.1, so the host can tell (``$SSH_CONNECTION``)
whether a client came through the bastion or straight from 198.18.0.1. It logs in as the lab's login user
(the same ``authorized_keys``), with its own host key. Made for tests of ProxyJump and ProxyCommand:
``up()`` after the lab is up, ``down()`` after; ``lab down`` removes it too.

Example::

    info = bastion.up()    # BastionInfo(host="198.18.2.2", port=22, user="tpx-admin", ...)
    bastion.down()
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from ..render import pki
from . import core, netns, sshd
from .netns import End

NS = "tpx-bastion"
ROOT_VETH, OUTER_VETH = "tpx-b0", "tpx-b1"
INNER_VETH, HOST_SIDE_VETH = "tpx-b2", "tpx-b3"
ROOT_ADDR, ADDR = "198.18.2.1", "198.18.2.2"
INNER_ADDR, HOST_SIDE_ADDR = "198.18.3.1", "198.18.3.2"
PORT = 22


def state_dir() -> Path:
    """Where the bastion keeps its sshd config, host key, pid and log (inside the lab's directory)."""
    return core.STATE_DIR / "bastion"


@dataclass(frozen=True)
class BastionInfo:
    """How to reach the bastion: address, port, login user and a known_hosts line for its key."""

    host: str
    port: int
    user: str
    known_hosts_line: str
    host_key_fingerprint: str


def up() -> BastionInfo:
    """Create the bastion namespace, its two veths and its sshd (the lab must be up); replaces a stale one."""
    core.require_root()
    if core.HOST_NS not in core.existing_namespaces():
        raise LabError("The bastion stands in front of the lab's host: bring the lab up first (tproxy-nb lab up).")
    down()
    try:
        return _make()
    except BaseException:
        down()
        raise


def _make() -> BastionInfo:
    d = state_dir()
    d.mkdir(mode=0o700, parents=True)
    private, public = pki.ssh_keypair("tproxy-nb-lab-bastion")
    pki.write_private(d / "ssh_host_ed25519_key", private)
    (d / "ssh_host_ed25519_key.pub").write_text(public + "\n")
    run, ns = netns.run, netns.in_ns
    run(["ip", "netns", "add", NS])
    run(ns(NS, "ip", "link", "set", "lo", "up"))
    netns.veth(End(ROOT_VETH, None, f"{ROOT_ADDR}/30"), End(OUTER_VETH, NS, f"{ADDR}/30"))
    netns.veth(End(INNER_VETH, NS, f"{INNER_ADDR}/30"), End(HOST_SIDE_VETH, core.HOST_NS, f"{HOST_SIDE_ADDR}/30"))
    # Only the host's sshd address is reachable through the bastion, as in a VPC behind a jump host.
    run(ns(NS, "ip", "route", "add", f"{core.HOST_ADDR}/32", "via", HOST_SIDE_ADDR))
    log = d / "sshd.log"
    cfg = sshd.write_config(
        d / "sshd_config", ADDR, PORT, d / "ssh_host_ed25519_key", pid_file=d / "sshd.pid", AllowTcpForwarding="yes"
    )
    run(ns(NS, "/usr/sbin/sshd", "-f", str(cfg), "-E", str(log)))
    sshd.wait(ADDR, PORT, log, what="The bastion's sshd")
    return BastionInfo(ADDR, PORT, core.LOGIN_USER, sshd.known_hosts_line(ADDR, public), sshd.fingerprint(public))


def leftovers() -> list[str]:
    """What of the bastion is still on the machine (empty after ``down``)."""
    found = []
    if NS in netns.names():
        found.append(f"namespace {NS}")
    if netns.link_exists(ROOT_VETH):
        found.append(f"veth {ROOT_VETH}")
    pid = netns.read_pid(state_dir() / "sshd.pid")
    if netns.pid_alive(pid):
        found.append(f"process {pid} (bastion sshd)")
    return found


def down() -> list[str]:
    """Stop the bastion's sshd (by its PID) and remove its namespace, veths and files; nothing there is fine."""
    removed = netns.remove(NS, netns.read_pid(state_dir() / "sshd.pid"), ROOT_VETH, (core.HOST_NS, HOST_SIDE_VETH))
    if state_dir().exists():
        shutil.rmtree(state_dir(), ignore_errors=True)
        removed.append(str(state_dir()))
    return removed
