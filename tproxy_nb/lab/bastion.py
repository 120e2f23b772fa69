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
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from ..render import pki
from . import core

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
    run, ns = core._run, core._ns
    run(["ip", "netns", "add", NS])
    run(ns(NS, "ip", "link", "set", "lo", "up"))
    _veth((ROOT_VETH, None, ROOT_ADDR), (OUTER_VETH, NS, ADDR))
    _veth((INNER_VETH, NS, INNER_ADDR), (HOST_SIDE_VETH, core.HOST_NS, HOST_SIDE_ADDR))
    # Only the host's sshd address is reachable through the bastion, as in a VPC behind a jump host.
    run(ns(NS, "ip", "route", "add", f"{core.HOST_ADDR}/32", "via", HOST_SIDE_ADDR))
    # Only what differs from sshd's defaults: our address and key, keys only, forwarding (its job).
    options = {
        "ListenAddress": f"{ADDR}:{PORT}",
        "HostKey": d / "ssh_host_ed25519_key",
        "PidFile": d / "sshd.pid",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UsePAM": "no",
        "AllowTcpForwarding": "yes",
    }
    cfg = d / "sshd_config"
    cfg.write_text("".join(f"{k} {v}\n" for k, v in options.items()))
    run(ns(NS, "/usr/sbin/sshd", "-f", str(cfg), "-E", str(d / "sshd.log")))
    for _ in range(200):  # 10 s
        if core._ssh_banner(ADDR, PORT, timeout=0.5):
            break
        time.sleep(0.05)
    else:
        raise LabError(f"The bastion's sshd did not answer on {ADDR}:{PORT} within 10 s; see {d / 'sshd.log'}.")
    key_type, key_b64 = public.split()[:2]
    return BastionInfo(ADDR, PORT, core.LOGIN_USER, f"{ADDR} {key_type} {key_b64}", _fingerprint(key_b64))


def _veth(*ends: tuple[str, str | None, str]) -> None:
    """A veth pair: each end (name, namespace or None for the root one, address) gets its /30 and goes up."""
    (left, left_ns, _), (right, right_ns, _) = ends
    where = {left: ["netns", left_ns] if left_ns else [], right: ["netns", right_ns] if right_ns else []}
    core._run(["ip", "link", "add", left, *where[left], "type", "veth", "peer", "name", right, *where[right]])
    for name, ns, addr in ends:
        inside = (lambda *args, ns=ns: core._ns(ns, *args)) if ns else (lambda *args: list(args))
        core._run(inside("ip", "addr", "add", f"{addr}/30", "dev", name))
        core._run(inside("ip", "link", "set", name, "up"))


def _fingerprint(key_b64: str) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def leftovers() -> list[str]:
    """What of the bastion is still on the machine (empty after ``down``)."""
    found = []
    if NS in _namespaces():
        found.append(f"namespace {NS}")
    if core._run(["ip", "link", "show", ROOT_VETH], check=False).returncode == 0:
        found.append(f"veth {ROOT_VETH}")
    pid = core._read_pid(state_dir() / "sshd.pid")
    if core._pid_alive(pid):
        found.append(f"process {pid} (bastion sshd)")
    return found


def down() -> list[str]:
    """Stop the bastion's sshd (by its PID) and remove its namespace, veths and files; nothing there is fine."""
    removed = []
    pids = core.namespace_pids(NS) if NS in _namespaces() else []
    pid = core._read_pid(state_dir() / "sshd.pid")
    if pid is not None and core._pid_alive(pid) and pid not in pids:
        pids.append(pid)
    if pids:
        core._kill_pids(pids)
        removed.append(f"{len(pids)} bastion process(es)")
    if NS in _namespaces():
        core._run(["ip", "netns", "del", NS], check=False)
        removed.append(f"namespace {NS}")
    # Deleting the namespace takes its veths' peers along; these catch a half-built bastion.
    if core._run(["ip", "link", "show", ROOT_VETH], check=False).returncode == 0:
        core._run(["ip", "link", "del", ROOT_VETH], check=False)
        removed.append(f"veth {ROOT_VETH}")
    if core.HOST_NS in core.existing_namespaces():
        gone = core._run(core._ns(core.HOST_NS, "ip", "link", "del", HOST_SIDE_VETH), check=False)
        if gone.returncode == 0:
            removed.append(f"veth {HOST_SIDE_VETH}")
    if state_dir().exists():
        shutil.rmtree(state_dir(), ignore_errors=True)
        removed.append(str(state_dir()))
    return removed


def _namespaces() -> set[str]:
    p = core._run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in p.stdout.splitlines() if line.strip()}
