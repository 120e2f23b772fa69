"""A lab host with its own Debian root filesystem: a second machine, not this one, for the chain to provision.

::

    root namespace              tpx-root ("a Debian 12 instance": own /, /proc, /dev, /dev/shm, PIDs, hostname)
    tpx-f0 198.18.4.1/30 ────── tpx-f1 198.18.4.2/30  sshd :22   admin, passwordless sudo
                                tpx-f2 198.18.5.1/30 ──────────── tpx-f3 198.18.5.2/30 (in tpx-inet: the sites)
                                       2001:db8:5::1/64                  2001:db8:5::2/64
                                default routes via tpx-f3 (both families), as an instance's via its gateway

The root filesystem is a ``debootstrap --variant=minbase`` of bookworm from the machine's own Debian
mirror (``/etc/apt/sources.list*``), with what the chain runs on a host (:data:`PACKAGES`) and an
``admin`` user with passwordless sudo as cloud-init leaves it on a Debian AMI. It is built once and
cached in :data:`CACHE_DIR` (a lock keeps two builds apart). Each ``up`` gets a clean copy: an overlay
of the cache (read-only) and an empty upper directory of its own, mounted only inside the host's mount
namespace, so the cache is never written and nothing is mounted on the machine. Accounts, files and
Envoy's ``/dev/shm`` then live in that host, not here.

The host is one process tree: ``ip netns exec tpx-root unshare --mount --pid --uts --fork --kill-child``
runs a shell that mounts the overlay, ``proc``, ``sysfs``, a private ``/dev`` (with its own ``devpts``
and ``/dev/shm``), ``/run`` and ``/tmp``, then ``exec chroot … sshd -D``. sshd is PID 1 there; stopping
the recorded ``unshare`` PID ends every process of the host and with them its mounts.

Example::

    info = rootfs.up()          # the lab must be up (the host reaches tpx-inet's sites)
    host = info.host_obj()      # admin@198.18.4.2, its own pinned host key
    rootfs.down()               # the cache stays
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import LabError
from ..render import pki
from . import core, netns, sshd
from .netns import End

NS = "tpx-root"
ROOT_VETH, HOST_VETH = "tpx-f0", "tpx-f1"
UPLINK_VETH, INET_VETH = "tpx-f2", "tpx-f3"
ROOT_ADDR, ADDR = "198.18.4.1", "198.18.4.2"
UPLINK_ADDR, GATEWAY = "198.18.5.1", "198.18.5.2"
UPLINK_ADDR6, GATEWAY6 = "2001:db8:5::1", "2001:db8:5::2"
PORT = 22
USER = "admin"
HOSTNAME = "tpx-rootfs"
SUITE = "bookworm"
#: What the chain runs on a host beyond minbase: sshd and sudo to get in; curl (the checks, /ready);
#: iptables (the rules); iproute2 (``ss``); procps (``pgrep``, ``ps``); python3 (``envoy_install: pip``);
#: ca-certificates (the system CA bundle the lab's public CA joins); netbase (/etc/protocols, /etc/services);
#: tcpdump (notebook 4's capture installs it with apt where missing, and this host has no Debian mirror).
PACKAGES = (
    "openssh-server",
    "sudo",
    "curl",
    "iptables",
    "iproute2",
    "procps",
    "python3",
    "ca-certificates",
    "netbase",
    "tcpdump",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE_DIR = Path(os.environ.get("TPROXY_NB_CACHE_DIR", "/var/cache/tproxy-nb"))
#: Written last into a finished build: a cache directory without it is not used.
COMPLETE = ".tproxy-nb-rootfs-complete"
BUILD_TIMEOUT_S = 1800
#: What cloud-init writes for the default user on a Debian AMI.
SUDOERS_FILE = "etc/sudoers.d/90-cloud-init-users"
SUDOERS_RULE = f"# Created by cloud-init (tproxy-nb lab stand-in)\n{USER} ALL=(ALL) NOPASSWD:ALL\n"


def arch() -> str:
    """Debian's name for this machine's architecture (``amd64``, ``arm64``)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def cache_path() -> Path:
    """The cached root filesystem for this machine's architecture (a directory)."""
    return CACHE_DIR / f"rootfs-{SUITE}-{arch()}"


def mirror_from_sources(texts: list[str], suite: str = SUITE) -> str | None:
    """The first Debian archive URL that serves ``suite`` in apt source files (deb822 or one-line format).

    texts: the contents of ``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/*``.

    Example: ``mirror_from_sources(["deb http://deb.debian.org/debian bookworm main"])`` ->
    ``"http://deb.debian.org/debian"``.
    """
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict((m[1].lower(), m[2].split()) for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
            if suite in fields.get("suites", []) and "deb" in fields.get("types", []):
                uris = [u for u in fields.get("uris", []) if u.startswith(("http://", "https://"))]
                if uris:
                    return uris[0].rstrip("/")
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # options [arch=...] dropped
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite and words[1].startswith("http"):
                return words[1].rstrip("/")
    return None


def mirror() -> str:
    """The machine's own Debian mirror (its apt sources), else deb.debian.org."""
    etc = Path("/etc/apt")
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    texts = [f.read_text(errors="replace") for f in files if f.is_file()]
    return mirror_from_sources(texts) or DEFAULT_MIRROR


# --------------------------------------------------------------------------- the cache


def ensure_cache(say: Callable[[str], None] = lambda msg: None) -> Path:
    """The cached root filesystem, built first if missing (once: concurrent callers wait on a lock).

    say: progress messages (one line each).

    Example: ``ensure_cache()`` -> ``PosixPath('/var/cache/tproxy-nb/rootfs-bookworm-amd64')``.
    """
    target = cache_path()
    if _cache_ok(target):
        return target
    if shutil.which("debootstrap") is None:
        raise LabError(
            "The rootfs lab host is built with debootstrap, which is not installed: apt-get install debootstrap "
            "('make test' installs it)."
        )
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _cache_ok(target):  # another process may have built it while we waited
            _build(target, say)
    return target


def _cache_ok(target: Path) -> bool:
    """A finished build with today's package list (a changed :data:`PACKAGES` rebuilds it)."""
    try:
        marker = (target / COMPLETE).read_text()
    except OSError:
        return False
    return f"packages {' '.join(PACKAGES)}\n" in marker


def _build(target: Path, say: Callable[[str], None]) -> None:
    build = target.with_name(target.name + ".build")
    shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    url = mirror()
    say(f"building the rootfs host's Debian {SUITE} from {url} (once; cached in {target})")
    start = time.monotonic()
    log = CACHE_DIR / f"{target.name}.log"
    # In a mount namespace of its own: whatever debootstrap mounts inside the tree goes away with it, even on failure.
    args = ["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase"]
    args += [f"--include={','.join(PACKAGES)}", SUITE, str(build), url]
    with open(log, "w") as out:
        try:
            p = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p = None
    if p is None or p.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(
            f"debootstrap could not build the rootfs lab host from {url} "
            f"({'timed out' if p is None else f'exit {p.returncode}'}): {' / '.join(tail) or 'no output'}. "
            f"Full log: {log}. The host needs the Debian archive its apt sources name."
        )
    try:
        _make_admin(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    seconds = time.monotonic() - start
    (build / COMPLETE).write_text(
        f"suite {SUITE}\nmirror {url}\npackages {' '.join(PACKAGES)}\nseconds {seconds:.0f}\n"
    )
    build.rename(target)
    say(f"rootfs cache built in {seconds:.0f} s")


def _make_admin(tree: Path) -> None:
    """``admin`` (uid 1000, groups sudo and adm, no password) and cloud-init's sudoers rule; no host keys."""
    netns.run(["chroot", str(tree), "useradd", "-m", "-u", "1000", "-s", "/bin/bash", "-G", "sudo,adm", USER])
    netns.run(["chroot", str(tree), "usermod", "-p", "*", USER])
    sudoers = tree / SUDOERS_FILE
    sudoers.write_text(SUDOERS_RULE)
    os.chmod(sudoers, 0o440)
    netns.run(["chroot", str(tree), "visudo", "-cf", "/" + SUDOERS_FILE])
    # Each run gets its own host key (pinned by the lab), as each instance does.
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    netns.run(["chroot", str(tree), "apt-get", "clean"])


# --------------------------------------------------------------------------- one run of the host


def run_dir() -> Path:
    """This run's files: the overlay's upper and work directories, the host key, known_hosts, PID, log."""
    return core.STATE_DIR / "rootfs"


#: Mounts, then sshd as PID 1 of the host's own PID namespace. Arguments: lower, upper, work, merged, hostname.
#: devpts needs its own instance (and /dev/ptmx pointing into it) or PTY allocation fails; a tmpfs on
#: /dev/shm keeps Envoy's shared memory inside the host.
HOST_SCRIPT = r"""
set -e
lower=$1 upper=$2 work=$3 m=$4
mount -t overlay tpx-rootfs -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$m"
mount -t proc proc "$m/proc"
mount -t sysfs sysfs "$m/sys"
mount -t tmpfs -o mode=755,nosuid tmpfs "$m/dev"
mknod -m 666 "$m/dev/null" c 1 3; mknod -m 666 "$m/dev/zero" c 1 5; mknod -m 666 "$m/dev/full" c 1 7
mknod -m 666 "$m/dev/random" c 1 8; mknod -m 666 "$m/dev/urandom" c 1 9; mknod -m 666 "$m/dev/tty" c 5 0
mkdir -m 755 "$m/dev/pts"; mkdir -m 1777 "$m/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$m/dev/pts"
ln -s pts/ptmx "$m/dev/ptmx"
ln -s /proc/self/fd "$m/dev/fd"
ln -s /proc/self/fd/0 "$m/dev/stdin"; ln -s /proc/self/fd/1 "$m/dev/stdout"; ln -s /proc/self/fd/2 "$m/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$m/dev/shm"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$m/run"
mkdir -m 755 "$m/run/sshd"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$m/tmp"
hostname "$5"
exec chroot "$m" /usr/sbin/sshd -D -e
"""


def status() -> core.LabInfo:
    """The rootfs host's state, read without changing anything (``healthy`` False when it is not up)."""
    d = run_dir()
    problems = []
    present = [NS] if NS in netns.names() else []
    if not present:
        problems.append(f"namespace {NS} is missing")
    pid = netns.read_pid(d / "host.pid")
    if not netns.pid_alive(pid):
        problems.append("the rootfs host is not running")
    elif not sshd.answers(ADDR, PORT, timeout=3.0):
        problems.append(f"sshd does not answer on {ADDR}:{PORT}")
    pub = d / "ssh_host_ed25519_key.pub"
    return core.LabInfo(
        ADDR,
        PORT,
        USER,
        str(core.STATE_DIR / "id_ed25519"),
        str(d / "known_hosts"),
        sshd.fingerprint(pub.read_text()) if pub.is_file() else None,
        present,
        not problems,
        problems,
    )


def pid() -> int | None:
    """The PID of the host's outermost process (``unshare``), when it runs; its end ends the host."""
    found = netns.read_pid(run_dir() / "host.pid")
    return found if netns.pid_alive(found) else None


def root() -> Path | None:
    """The host's ``/`` seen from this machine (``/proc/PID/root`` of its PID 1, through its own mounts), or None.

    Example: ``(root() / "etc/hostname").read_text()`` -> ``"tpx-rootfs\n"``.
    """
    outer = pid()
    if outer is None:
        return None
    try:
        children = Path(f"/proc/{outer}/task/{outer}/children").read_text().split()
    except OSError:
        return None
    return Path(f"/proc/{children[0]}/root") if children else None


def up(progress: bool = False) -> core.LabInfo:
    """Bring the lab and the rootfs host up; a healthy one is left alone, anything else is replaced.

    progress: print one line per stage (the CLI sets it). The first call builds the cache (minutes).
    """
    say = (lambda msg: print(f"lab: {msg}", file=sys.stderr)) if progress else (lambda msg: None)
    core.up(progress=progress)
    current = status()
    if current.healthy:
        return current
    down()
    lower = ensure_cache(say)

    def build() -> None:
        say(f"rootfs host {USER}@{ADDR} (own root filesystem, mount, PID and network namespaces)")
        _prepare(lower)
        _make_network()
        _start(lower)

    return core.all_or_nothing(build, status, down, f"The rootfs host (logs in {run_dir()})")


def _prepare(lower: Path) -> None:
    """This run's upper directory: what differs from the cache (host key, hosts, the lab CA, admin's key)."""
    d = run_dir()
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(mode=0o755, parents=True)
    private, public = pki.ssh_keypair(f"{HOSTNAME}-host")
    pki.write_private(d / "ssh_host_ed25519_key", private)
    (d / "ssh_host_ed25519_key.pub").write_text(public + "\n")
    (d / "known_hosts").write_text(sshd.known_hosts_line(ADDR, public) + "\n")
    admin = _owner(lower, f"home/{USER}")
    ca = (core.STATE_DIR / "ca.crt").read_text()
    bundle = (lower / "etc/ssl/certs/ca-certificates.crt").read_text()
    drop_in = sshd.config_text(ADDR, PORT, "/etc/ssh/ssh_host_ed25519_key")
    put = _Upper(lower, d / "upper").put
    put("etc/hostname", HOSTNAME + "\n")
    put("etc/hosts", core.hosts_text(HOSTNAME))
    put("etc/resolv.conf", core.RESOLV_CONF)
    put("etc/ssh/ssh_host_ed25519_key", private, 0o600)
    put("etc/ssh/ssh_host_ed25519_key.pub", public + "\n")
    # Debian's sshd_config includes sshd_config.d/*.conf first, and the first value of an option wins.
    put("etc/ssh/sshd_config.d/tproxy-nb-lab.conf", drop_in)
    put(f"home/{USER}/.ssh/authorized_keys", (core.STATE_DIR / "id_ed25519.pub").read_text(), 0o600, admin)
    # The lab's "public" CA, trusted as the web PKI is: where update-ca-certificates would put it, and in the bundle.
    put("usr/local/share/ca-certificates/tproxy-nb-lab.crt", ca)
    put("etc/ssl/certs/ca-certificates.crt", bundle + ca)


def _owner(tree: Path, rel: str) -> tuple[int, int]:
    st = (tree / rel).stat()
    return st.st_uid, st.st_gid


class _Upper:
    """Writes into an overlay's upper directory; a new directory copies its lower twin's mode and owner."""

    def __init__(self, lower: Path, upper: Path):
        self.lower, self.upper = lower, upper

    def put(self, rel: str, text: str | bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            sub = Path(*parts[:i])
            made = self.upper / sub
            if made.is_dir():
                continue
            twin = self.lower / sub
            # A directory the cache lacks (admin's .ssh) belongs to the file's owner, private to them.
            st_mode, uid, gid = (
                (twin.stat().st_mode & 0o7777, *_owner(self.lower, str(sub)))
                if twin.is_dir()
                else (
                    0o700,
                    *owner,
                )
            )
            made.mkdir()
            os.chmod(made, st_mode)
            os.chown(made, uid, gid)
        path = self.upper / rel
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        os.chmod(path, mode)
        os.chown(path, *owner)


def _make_network() -> None:
    netns.run(["ip", "netns", "add", NS])
    netns.run(netns.in_ns(NS, "ip", "link", "set", "lo", "up"))
    for key in ("all", "default"):
        netns.run(netns.in_ns(NS, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=0"))
    netns.run(netns.in_ns(NS, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"))
    netns.veth(End(ROOT_VETH, None, f"{ROOT_ADDR}/30"), End(HOST_VETH, NS, f"{ADDR}/30"))
    netns.veth(
        End(UPLINK_VETH, NS, (f"{UPLINK_ADDR}/30", f"{UPLINK_ADDR6}/64")),
        End(INET_VETH, core.INET_NS, (f"{GATEWAY}/30", f"{GATEWAY6}/64")),
    )
    # Everything else through the "internet", as an instance routes through its VPC gateway.
    netns.run(netns.in_ns(NS, "ip", "route", "add", "default", "via", GATEWAY))
    netns.run(netns.in_ns(NS, "ip", "-6", "route", "add", "default", "via", GATEWAY6))


def _start(lower: Path) -> None:
    d = run_dir()
    log = d / "host.log"
    args = ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", "--propagation", "private"]
    args += ["sh", "-c", HOST_SCRIPT, "tpx-rootfs"]
    args += [str(lower), str(d / "upper"), str(d / "work"), str(d / "merged"), HOSTNAME]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            netns.in_ns(NS, *args), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    (d / "host.pid").write_text(f"{proc.pid}\n")
    sshd.wait(ADDR, PORT, log, proc=proc, what="The rootfs host's sshd")


# --------------------------------------------------------------------------- down


def _mounts_under(path: Path) -> list[str]:
    """Mount points of this machine's mount namespace at or under ``path`` (deepest first)."""
    prefix = str(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def leftovers() -> list[str]:
    """What of the rootfs host is still on the machine (empty after ``down``; the cache is not a leftover)."""
    found = [f"namespace {NS}"] if NS in netns.names() else []
    if netns.link_exists(ROOT_VETH):
        found.append(f"veth {ROOT_VETH}")
    host = netns.read_pid(run_dir() / "host.pid")
    if netns.pid_alive(host):
        found.append(f"process {host} (rootfs host)")
    found += [f"mount {m}" for m in _mounts_under(run_dir())]
    if run_dir().exists():
        found.append(f"file {run_dir()}")
    return found


def down() -> list[str]:
    """Stop the rootfs host (its ``unshare`` PID, then any process left in its namespace), remove its namespace,
    veths and this run's files. The cache stays; nothing there is fine."""
    removed = netns.remove(NS, netns.read_pid(run_dir() / "host.pid"), ROOT_VETH, (core.INET_NS, INET_VETH))
    # The host's mounts lived in its own mount namespace and went with it; this catches anything else.
    for point in _mounts_under(run_dir()):
        netns.run(["umount", "-l", point], check=False)
        removed.append(f"mount {point}")
    if run_dir().exists():
        shutil.rmtree(run_dir(), ignore_errors=True)
        removed.append(str(run_dir()))
    return removed
