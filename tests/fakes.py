"""One fake host for the pure tests: an in-memory Debian host that answers the fact commands and
carries out the commands the plans' actions send.

It models accounts (``getent``), files (content, mode, owner, group), the iptables tables of both
address families (as ``iptables-save``/``ip6tables-save`` print them, changed through the same restore
simulator the firewall tests use), ip rules and routes (``ip -j``, ``ip rule|route add|del``), which
iptables tools are installed, its IPv6 addresses, and Envoy processes. A command it does not know fails
the test (``AssertionError``): the vocabulary of what plans send stays small and explicit. Scripted
answers (``answers=``) override the model, for failures a real host gives (iptables missing, a refused
restore).

Example::

    host = FakeHost()
    plan = accounts.plan_account(facts.accounts(host), Settings().envoy, "envoy")
    plan.apply(host)
    assert host.users["tpx-envoy"].uid == 2101
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tproxy_nb.remote.host import Result, to_shell
from tproxy_nb.render import iptables_save as ips
from tproxy_nb.steps import envoy_binary, facts, firewall

ALL_TOOLS = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")


@dataclass
class FakeUser:
    uid: int
    gid: int
    gecos: str = ""


@dataclass
class FakeFile:
    kind: str  # "file" or "dir"
    mode: int
    owner: str = "root"
    group: str = "root"
    data: bytes = b""


@dataclass
class FakeProcess:
    argv: list[str]
    user: str
    caps: tuple[str, ...] = ()  # ambient capabilities (setpriv --ambient-caps)


EMPTY_NAT = (
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
)


def save_text(tables: dict[str, ips.Table]) -> str:
    """``iptables-save -c`` text of ``tables`` (what the fake prints)."""
    out = []
    for t in tables.values():
        out.append(f"*{t.name}")
        out += [f":{c.name} {c.policy or '-'} [{c.packets}:{c.bytes}]" for c in t.chains.values()]
        out += [f"[{r.packets}:{r.bytes}] {r.line}" for r in t.rules]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


@dataclass
class FakeHost:
    """An in-memory Debian host (see the module docstring).

    answers: ``{command prefix: (exit code, stdout, stderr)}`` answered before the model.
    """

    answers: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    hostname: str = "fake"
    name: str = "admin@fake:22"

    def __post_init__(self) -> None:
        self.users: dict[str, FakeUser] = {
            "root": FakeUser(0, 0, "root"),
            "daemon": FakeUser(1, 1, "daemon"),
            "nobody": FakeUser(65534, 65534, "nobody"),
            "admin": FakeUser(1000, 1000, "Debian"),
        }
        self.groups: dict[str, tuple[int, list[str]]] = {
            "root": (0, []),
            "daemon": (1, []),
            "sudo": (27, ["admin"]),
            "nogroup": (65534, []),
            "admin": (1000, []),
        }
        self.files: dict[str, FakeFile] = {p: FakeFile("dir", 0o755) for p in ("/", "/opt", "/run", "/dev/shm", "/tmp")}
        self.nat = ips.parse_save(EMPTY_NAT)  # every table of iptables-save (nat, mangle, ...), not only nat
        self.nat6 = ips.parse_save(EMPTY_NAT)
        # ip rules (both families) and routes (per table) as ``ip -j`` lists them.
        self.ip_rules: dict[str, list[dict]] = {
            f: [{"priority": 0, "src": "all", "table": "local"}, {"priority": 32766, "src": "all", "table": "main"}]
            for f in ("ipv4", "ipv6")
        }
        self.ip_routes: dict[str, dict[str, list[dict]]] = {"ipv4": {}, "ipv6": {}}
        self.has_ip = True
        self.tools: set[str] = set(ALL_TOOLS)
        self.ipv6_kernel = True
        self.ipv6_addresses: list[str] = []  # global ones, e.g. "20010db8000100000000000000000001"
        self.platform = "Linux\nx86_64\nglibc 2.36\n"  # what facts.PLATFORM_SCRIPT prints
        self.downloads: dict[str, bytes] = {}  # URL -> body, for curl -o
        self.pip_probe = "venv no\nlink \nindex curl: (6) Could not resolve host: pypi.org\n"  # PIP_PROBE_SCRIPT
        self.procs: dict[int, FakeProcess] = {}
        self.next_pid = 4000
        self.calls: list[tuple[str, bool, str | None, str | None]] = []  # (command, sudo, user, stdin)

    # ---- what tests look at

    def file(self, path: str) -> FakeFile | None:
        return self.files.get(path)

    def running(self) -> list[list[str]]:
        return [p.argv for p in self.procs.values()]

    def commands(self) -> list[str]:
        """Every command run, as shell text (fact reads included)."""
        return [c for c, *_ in self.calls]

    # ---- Host's interface

    def run(self, cmd, *, sudo=False, user=None, check=True, timeout=120, stdin=None, hint=""):
        shown = to_shell(cmd)
        self.calls.append((shown, sudo, user, stdin))
        for key, (code, out, err) in self.answers.items():
            if shown.startswith(key):
                return self._result(shown, code, out, err, check)
        argv = list(cmd) if not isinstance(cmd, str) else None
        code, out, err = self._dispatch(argv, shown, stdin, root=sudo or user == "root")
        return self._result(shown, code, out, err, check)

    def put(self, src, remote, *, mode=0o644, owner=None, group=None, sudo=False, progress=None) -> bool:
        if isinstance(src, (str, os.PathLike)):
            data = Path(src).read_bytes()
        else:
            data = src.read()
            data = data.encode() if isinstance(data, str) else data
        owner = owner or "root"
        group = group or owner
        self._need_owner(owner, group, remote)
        before = self.files.get(remote)
        self._mkparents(remote)
        self.files[remote] = FakeFile("file", mode, owner, group, data)
        return before != self.files[remote]

    def put_text(self, text: str, remote: str, **kw) -> bool:
        return self.put(io.BytesIO(text.encode()), remote, **kw)

    def get(self, remote, local=None, *, sudo=False):
        return self.files[remote].data.decode()

    def close(self) -> None:
        pass

    def connect(self):
        return self

    # ---- the model

    def _result(self, shown, code, out, err, check):
        from tproxy_nb.errors import CommandError

        r = Result(shown, code, out, err, 0.01, self.name)
        if check and code != 0:
            raise CommandError(r)
        return r

    def _need_owner(self, owner: str, group: str, path: str) -> None:
        if owner not in self.users:
            raise AssertionError(f"install: invalid user {owner!r} for {path} (create the account first)")
        if group not in self.groups:
            raise AssertionError(f"install: invalid group {group!r} for {path} (create the account first)")

    def _mkparents(self, path: str) -> None:
        parent = os.path.dirname(path)
        while parent not in self.files:
            self.files[parent] = FakeFile("dir", 0o755)
            parent = os.path.dirname(parent)

    def _gid(self, group: str) -> int:
        return self.groups[group][0] if not group.isdigit() else int(group)

    def _dispatch(self, argv, shown: str, stdin, root: bool) -> tuple[int, str, str]:
        if argv and argv[:2] == ["sh", "-c"]:
            return self._script(argv[2], argv[4:])
        if argv is None:
            return self._shell(shown)
        name, args = argv[0], argv[1:]
        handler = getattr(self, "_cmd_" + os.path.basename(name).replace("-", "_"), None)
        if handler is None:
            if "--mode" in args and "validate" in args:
                return self._validate(args)
            raise AssertionError(f"the fake host does not know this command: {shown}")
        return handler(args, stdin)

    # facts
    def _script(self, script: str, args: list[str]) -> tuple[int, str, str]:
        if script == facts.ACCOUNTS_SCRIPT:
            passwd = [f"{n}:x:{u.uid}:{u.gid}:{u.gecos}:/nonexistent:/usr/sbin/nologin" for n, u in self.users.items()]
            group = [f"{n}:x:{gid}:{','.join(members)}" for n, (gid, members) in self.groups.items()]
            return 0, "\n".join(passwd + ["--"] + group) + "\n", ""
        if script == facts.FILES_SCRIPT:
            lines = []
            for p in args:
                f = self.files.get(p)
                if f is None:
                    lines.append("-")
                elif f.kind == "dir":
                    lines.append(f"{f.mode:o} {f.owner} {f.group} dir 0 -")
                else:
                    sha = hashlib.sha256(f.data).hexdigest()
                    lines.append(f"{f.mode:o} {f.owner} {f.group} file {len(f.data)} {sha}")
            return 0, "\n".join(lines) + "\n", ""
        if script == facts.ENVOY_SCRIPT:
            lines = []
            for pid_file, pattern, _port in zip(args[0::3], args[1::3], args[2::3]):
                f = self.files.get(pid_file)
                rec = f.data.decode().strip() if f else ""
                cmd = " ".join(self.procs[int(rec)].argv) if rec.isdigit() and int(rec) in self.procs else ""
                found = [pid for pid, p in self.procs.items() if re.search(pattern, " ".join(p.argv))]
                ready = "LIVE" if found or cmd else ""
                lines.append(f"{rec}\t{cmd}\t{' '.join(map(str, found))} \t{ready}")
            return 0, "\n".join(lines) + "\n", ""
        if script == envoy_binary.INSTALL_SCRIPT:
            part, want, dest, what = args
            if want.startswith("@"):  # the sha256 sent along in a file
                want = self.files.pop(want[1:]).data.decode()[:64]
            f = self.files.pop(part)
            got = hashlib.sha256(f.data).hexdigest()
            if got != want:
                return 3, "", f"tproxy-nb: {what} has sha256 {got}, expected {want}; {dest} was left as it was.\n"
            self.files[dest] = FakeFile("file", 0o755, "root", "root", f.data)
            return 0, "", ""
        if script == facts.PLATFORM_SCRIPT:
            return 0, self.platform, ""
        if script == facts.PIP_PROBE_SCRIPT:
            return 0, self.pip_probe, ""
        if script == firewall.FAMILIES_SCRIPT:
            lines = [f"tool {t}" for t in ALL_TOOLS if t in self.tools]
            if self.ipv6_kernel:
                lines += ["kernel-ipv6", "addr 00000000000000000000000000000001 01 80 10 80       lo"]
                lines += [f"addr {a} 02 40 00 80     eth0" for a in self.ipv6_addresses]
            return 0, "\n".join(lines) + "\n", ""
        if script == facts.ROUTING_SCRIPT:
            if not self.has_ip:
                return 0, "no-ip\n", ""
            lines = []
            for num, f in (("4", "ipv4"), ("6", "ipv6")):
                lines.append(f"rules {num} {json.dumps(self.ip_rules[f])}")
                lines.append(f"routes {num} {json.dumps(self.ip_routes[f].get(args[0], []))}")
            return 0, "\n".join(lines) + "\n", ""
        raise AssertionError(f"the fake host does not know this script: {script[:80]}")

    def _shell(self, text: str) -> tuple[int, str, str]:
        """The few shell strings the library sends (which, require_iptables, Envoy's launch/wait/stop)."""
        if "command -v" in text:
            names = re.findall(r"command -v (\S+?)(?: |\))", text)
            if text.startswith("printf"):  # remote.host.which: one path per line
                return 0, "".join(f"/usr/bin/{n}\n" for n in names), ""
            return 0, "", ""  # require_iptables: prints the missing ones
        if "setsid sh -c" in text:  # envoy.launch_script
            inner = shlex.split(text.split("setsid sh -c ", 1)[1])[0]
            argv = shlex.split(inner.split(" & ", 1)[0])
            pid_file = re.search(r"echo \$! > (\S+);", inner)[1]
            pid, self.next_pid = self.next_pid, self.next_pid + 1
            self.procs[pid] = FakeProcess(argv, "envoy")
            self.files[shlex.split(pid_file)[0]] = FakeFile("file", 0o644, data=f"{pid}\n".encode())
            return 0, "", ""
        if text.startswith("end=$(("):  # envoy.wait_ready_script
            return 0, "", ""
        if text.startswith("kill -TERM "):  # envoy_proc.stop
            for pid in re.match(r"kill -TERM ([\d ]+) ", text)[1].split():
                self.procs.pop(int(pid), None)
            return 0, "", ""
        if text.startswith("grep -l -F"):  # who maps an Envoy shared-memory file: nobody
            return 0, "", ""
        raise AssertionError(f"the fake host does not know this shell command: {text[:120]}")

    def _validate(self, args: list[str]) -> tuple[int, str, str]:
        cfg = args[args.index("-c") + 1]
        if cfg not in self.files:
            return 1, "", f"unable to read file: {cfg}"
        return 0, "", ""

    # commands (argv)
    def _cmd_setpriv(self, args, stdin):
        """``setpriv --reuid U ... --ambient-caps +CAP -- sh -c SCRIPT``: SCRIPT's processes run as U with CAP."""
        assert args[args.index("--") + 1 : args.index("--") + 3] == ["sh", "-c"], args
        before = set(self.procs)
        result = self._shell(args[args.index("--") + 3])
        caps = tuple(c.lstrip("+") for c in args[args.index("--ambient-caps") + 1].split(","))
        for pid in set(self.procs) - before:
            self.procs[pid].user, self.procs[pid].caps = args[args.index("--reuid") + 1], caps
        return result

    def _cmd_true(self, args, stdin):
        return 0, "", ""

    def _cmd_groupadd(self, args, stdin):
        gid, name = int(args[args.index("-g") + 1]), args[-1]
        if name in self.groups or any(g == gid for g, _ in self.groups.values()):
            return 9, "", f"groupadd: group '{name}' or gid {gid} already exists"
        self.groups[name] = (gid, [])
        return 0, "", ""

    def _cmd_useradd(self, args, stdin):
        uid, group, name = int(args[args.index("-u") + 1]), args[args.index("-g") + 1], args[-1]
        gecos = args[args.index("-c") + 1] if "-c" in args else ""
        if name in self.users or any(u.uid == uid for u in self.users.values()):
            return 9, "", f"useradd: user '{name}' or uid {uid} already exists"
        if group not in self.groups:
            return 6, "", f"useradd: group '{group}' does not exist"
        self.users[name] = FakeUser(uid, self._gid(group), gecos)
        return 0, "", ""

    def _cmd_userdel(self, args, stdin):
        if self.users.pop(args[-1], None) is None:
            return 6, "", f"userdel: user '{args[-1]}' does not exist"
        return 0, "", ""

    def _cmd_groupdel(self, args, stdin):
        if self.groups.pop(args[-1], None) is None:
            return 6, "", f"groupdel: group '{args[-1]}' does not exist"
        return 0, "", ""

    def _cmd_install(self, args, stdin):
        assert args[0] == "-d", f"only install -d is modelled: {args}"
        mode = int(args[args.index("-m") + 1], 8)
        owner, group = args[args.index("-o") + 1], args[args.index("-g") + 1]
        self._need_owner(owner, group, " ".join(args))
        paths = args[args.index("--") + 1 :] if "--" in args else [args[-1]]
        for p in paths:
            self._mkparents(p)
            self.files[p] = FakeFile("dir", mode, owner, group)
        return 0, "", ""

    def _cmd_chown(self, args, stdin):
        owner, _, group = args[0].partition(":")
        self._need_owner(owner, group, args[-1])
        f = self.files[args[-1]]
        f.owner, f.group = owner, group
        return 0, "", ""

    def _cmd_chmod(self, args, stdin):
        self.files[args[-1]].mode = int(args[0], 8)
        return 0, "", ""

    def _cmd_rm(self, args, stdin):
        target = args[-1]
        for p in [p for p in self.files if p == target or p.startswith(target.rstrip("/") + "/")]:
            del self.files[p]
        return 0, "", ""

    def _cmd_gunzip(self, args, stdin):
        f = self.files.pop(args[-1])
        self.files[args[-1].removesuffix(".gz")] = FakeFile("file", f.mode, f.owner, f.group, gzip.decompress(f.data))
        return 0, "", ""

    def _cmd_curl(self, args, stdin):
        if "-o" in args:  # a download: answered from self.downloads
            body = self.downloads.get(args[-1])
            if body is None:
                return 22, "", "curl: (22) The requested URL returned error: 404\n"
            self.files[args[args.index("-o") + 1]] = FakeFile("file", 0o644, data=body)
            return 0, "", ""
        # Only an Envoy's admin interface on 127.0.0.1 is modelled: it answers while any Envoy runs.
        url = args[-1]
        assert url.startswith("http://127.0.0.1:"), f"the fake host has no network: {url}"
        if not self.procs:
            return 7, "", "curl: (7) Failed to connect"
        return 0, "LIVE\n" if url.endswith("/ready") else "", ""

    def _cmd_ss(self, args, stdin):
        return 0, "", ""

    def _cmd_tail(self, args, stdin):
        f = self.files.get(args[-1])
        return (0, f.data.decode(), "") if f else (1, "", "tail: cannot open")

    def _missing(self, name: str) -> tuple[int, str, str] | None:
        return None if name in self.tools else (127, "", f"sh: 1: {name}: not found\n")

    def _cmd_iptables(self, args, stdin):
        return self._missing("iptables") or (0, "iptables v1.8.9 (nf_tables)\n", "")

    @staticmethod
    def _only(tables: dict[str, ips.Table], args) -> dict[str, ips.Table]:
        """``-t TABLE``: that table alone (as the kernel has it), else all of them."""
        if "-t" not in args:
            return tables
        name = args[args.index("-t") + 1]
        return {name: tables[name]} if name in tables else {}

    def _cmd_iptables_save(self, args, stdin):
        return self._missing("iptables-save") or (0, save_text(self._only(self.nat, args)), "")

    def _cmd_ip6tables_save(self, args, stdin):
        return self._missing("ip6tables-save") or (0, save_text(self._only(self.nat6, args)), "")

    def _cmd_ip(self, args, stdin):
        """``ip [-6] rule|route add|del FIELDS... proto N``, with iproute2's answers to a duplicate or a miss."""
        if not self.has_ip:
            return 127, "", "sh: 1: ip: not found\n"
        family = "ipv6" if args[:1] == ["-6"] else "ipv4"
        kind, verb, *rest = args[1:] if family == "ipv6" else args
        opts = dict(zip(rest[::2], rest[1::2])) if kind == "rule" else {}
        if kind == "rule":
            mark, _, mask = opts.get("fwmark", "").partition("/")
            entry = {"priority": int(opts["priority"]), "src": "all", "fwmark": mark, "fwmask": mask or "0xffffffff"}
            entry |= {"table": opts["lookup"], "protocol": opts.get("proto", "boot")}
            entries = self.ip_rules[family]
        else:
            rtype, dst, more = rest[0], rest[1], dict(zip(rest[2::2], rest[3::2]))
            entry = {"type": rtype, "dst": dst, "dev": more["dev"], "protocol": more.get("proto", "boot")}
            entries = self.ip_routes[family].setdefault(more["table"], [])
        if verb == "add":
            if entry in entries:
                return 2, "", "RTNETLINK answers: File exists\n"
            entries.append(entry)
            entries.sort(key=lambda e: e.get("priority", 0))
        elif verb == "del":
            if entry not in entries:
                return 2, "", "RTNETLINK answers: No such file or directory\n"
            entries.remove(entry)
        else:
            raise AssertionError(f"the fake host does not know: ip {' '.join(args)}")
        return 0, "", ""

    def _restore(self, attr: str, name: str, args, stdin):
        from tproxy_nb.errors import StepError

        if name not in self.tools:
            return 127, "", f"sh: 1: {name}: not found\n"
        try:
            setattr(self, attr, ips.simulate_restore(getattr(self, attr), stdin or "", noflush="--noflush" in args))
        except StepError as e:
            return 1, "", f"{name}: {e}\n"
        return 0, "", ""

    def _cmd_iptables_restore(self, args, stdin):
        return self._restore("nat", "iptables-restore", args, stdin)

    def _cmd_ip6tables_restore(self, args, stdin):
        return self._restore("nat6", "ip6tables-restore", args, stdin)
