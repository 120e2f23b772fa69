"""Load rules on a host: in one atomic ``iptables-restore`` (:func:`restore`), or under a rollback guard
(:func:`apply_guarded`).

The guard is Debian's ``iptables-apply`` idea: before applying, save the current rules and start a
timer on the host that puts them back unless a confirmation arrives in time. The confirmation comes
over a NEW SSH connection, so rules that lock SSH out undo themselves without anyone's help.

Example::

    apply_guarded(host, render_rules(settings), guard_seconds=15).confirmed   # True: new SSH logins still work
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CommandError, CommandTimeout, ConnectError, StepError
from ..marks import GUARD_DIR
from ..remote.host import Host, Result
from ..render.firewall import tool
from ..render.iptables_save import BUILTIN_CHAINS, changed_tables, parse_save, ruleset_diff

#: Root-only directory on the host for guard backups (tmpfs: gone after a reboot, as are the rules).

_INSTALL_HINT = (
    "install the `iptables` package on it (Debian/Ubuntu: sudo apt-get install -y iptables; it brings "
    "ip6tables too) and retry. Nothing was changed."
)


# --------------------------------------------------------------------------- iptables commands on the host
# Here rather than in tproxy_nb.steps.firewall: the guard needs them and must not import that module.


def require_iptables(host: Host, family: str = "ipv4") -> None:
    """Raise :class:`StepError` unless iptables, iptables-save and iptables-restore exist on the host.

    family: ``"ipv6"`` checks ip6tables, ip6tables-save and ip6tables-restore.

    Example: ``require_iptables(host, "ipv6")``.
    """
    names = [tool(family, suffix) for suffix in ("", "-save", "-restore")]
    # Under sudo: these live in /usr/sbin, which a login user's PATH often lacks.
    script = "; ".join(f"command -v {n} >/dev/null || echo {n}" for n in names)
    r = host.run(script, sudo=True, check=False, timeout=30)
    missing = r.stdout.split()
    if missing or not r.ok:
        raise StepError(f"{', '.join(missing) or 'iptables'} not found on {host.name}: {_INSTALL_HINT}")


def run_iptables(host: Host, cmd: list[str]) -> Result:
    """Run a read-only iptables command as root; a missing binary or a failure is a StepError saying what to do."""
    r = host.run(cmd, sudo=True, check=False, timeout=60)
    if r.exit_code == 127:
        raise StepError(f"{cmd[0]} not found on {host.name}: {_INSTALL_HINT}")
    if not r.ok:
        raise StepError(f"{shlex.join(cmd)} failed on {host.name} (exit {r.exit_code}): {r.tail(3, 'stderr')}")
    return r


def _failed_line(stderr: str, text: str) -> str:
    # legacy says "line 4 failed", nft "Error occurred at line: 4".
    m = re.search(r"line (\d+) failed|at line:? (\d+)", stderr)
    lines = text.splitlines()
    no = int(m[1] or m[2]) if m else 0
    if 1 <= no <= len(lines):
        return f" The failing line {no} is: {lines[no - 1]}"
    return ""


def restore(host: Host, text: str, timeout: float = 60, family: str = "ipv4") -> Result:
    """Load ``text`` with one ``iptables-restore --noflush`` (all of a table or none of it).

    family: ``"ipv6"`` loads it with ``ip6tables-restore``.

    Raises :class:`StepError` with iptables' message and the failing line; nothing was applied then.

    Example: ``restore(host, render_rules(settings, "ipv6"), family="ipv6")``.
    """
    cmd = tool(family, "-restore")
    r = host.run([cmd, "--noflush"], sudo=True, stdin=text, check=False, timeout=timeout)
    if r.exit_code == 127:
        raise StepError(f"{cmd} not found on {host.name}: {_INSTALL_HINT}")
    if not r.ok:
        said = [
            line.strip()
            for line in (r.stderr or r.stdout).splitlines()
            if line.strip() and not line.lstrip().startswith("Try `")
        ]
        msg = " ".join(said).rstrip(".") or f"exit code {r.exit_code}"
        raise StepError(
            f"{cmd} refused the rules on {host.name}: {msg}.{_failed_line(msg, text)} "
            "Nothing was changed: each table is loaded in one transaction, all or nothing."
        )
    return r


# --------------------------------------------------------------------------- rollback guard


def rollback_text(saved: str, restore_text: str) -> str:
    """The full restore input that puts back ``saved`` (``iptables-save`` of all tables).

    A table the change touches but the save lacks did not exist (nft creates tables lazily): it
    is added as its empty built-in chains, so the rollback also undoes rules put there.

    Example: ``rollback_text(out, "*filter\\n-A INPUT -j DROP\\nCOMMIT\\n")`` ends with an empty ``*filter``.
    """
    have = set(parse_save(saved))
    extra = []
    for name in changed_tables(restore_text):
        if name in have:
            continue
        have.add(name)
        extra += [f"*{name}", *(f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS.get(name, ())), "COMMIT"]
    text = saved if saved.endswith("\n") or not saved else saved + "\n"
    return text + ("\n".join(extra) + "\n" if extra else "")


@dataclass(frozen=True)
class GuardFiles:
    """The guard's files on the host (root-only directory).

    backup: the full rollback input; the timer claims it by renaming it to ``firing``, the
    confirmation by renaming it to ``confirmed``: a rename is atomic, so exactly one of them wins.
    """

    dir: str
    token: str

    def path(self, suffix: str) -> str:
        return f"{self.dir}/iptables-guard-{self.token}.{suffix}"

    @property
    def backup(self) -> str:
        return self.path("rules")

    @property
    def pid(self) -> str:
        return self.path("pid")


def timer_script(files: GuardFiles, seconds: float, family: str = "ipv4") -> str:
    """Shell (run as root) that starts the detached rollback timer and prints its PID.

    family: which rules the timer puts back (``iptables-restore`` or ``ip6tables-restore``).

    The timer is a ``setsid`` session leader with stdio on files, so neither the end of the SSH
    session (SIGHUP) nor our command's time limit (it kills its own process group) ends it.

    Example: ``host.run(timer_script(GuardFiles("/run/tproxy-nb", "ab12"), 15), sudo=True)``.
    """
    q = shlex.quote
    b, firing, done, log, pid = (
        q(files.backup),
        q(files.path("firing")),
        q(files.path("rolled-back")),
        q(files.path("log")),
        q(files.pid),
    )
    inner = (
        f"echo $$ > {pid}; sleep {seconds:g}; "
        f"mv -f {b} {firing} 2>/dev/null || exit 0; "
        f"{tool(family, '-restore')} < {firing} && mv -f {firing} {done}"
    )
    return (
        f"cd / && setsid sh -c {q(inner)} </dev/null >>{log} 2>&1 & "
        f"i=0; while [ ! -s {pid} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; cat {pid}"
    )


def confirm_script(files: GuardFiles) -> str:
    """Shell (run as root) that cancels the timer; prints ``confirmed`` or ``expired``.

    The rename decides; killing the timer's process group (sh and its sleep; ``kill -SIG -PGID``,
    as dash's kill takes no ``--``) only tidies up.

    Example: ``fresh.run(confirm_script(files), sudo=True).stdout`` -> ``'confirmed\\n'``.
    """
    q = shlex.quote
    b, c, pid = q(files.backup), q(files.path("confirmed")), q(files.pid)
    return (
        f"if mv -f {b} {c} 2>/dev/null; then "
        f"kill -TERM -$(cat {pid}) 2>/dev/null; "
        f"rm -f {c} {pid} {q(files.path('log'))}; rmdir {q(files.dir)} 2>/dev/null; echo confirmed; "
        f"else echo expired; fi"
    )


def reconnect(host: Host, connect_timeout: float = 5) -> Host:
    """A NEW SSH connection with the same parameters as ``host`` (one attempt; the caller closes it).

    A fresh TCP handshake proves what the old connection cannot: that the rules still let new
    SSH connections in (an established one may survive through conntrack).

    Example: ``with reconnect(host) as fresh: fresh.run("true")``.
    """
    fresh = host.fresh(connect_timeout)
    fresh.connect_attempts = 1
    fresh.connect()
    return fresh


@dataclass(frozen=True)
class GuardOutcome:
    """What a guarded apply did: ``confirmed`` is True when the new rules stayed."""

    confirmed: bool
    pid: int
    backup: str
    seconds: float
    detail: str = ""


def apply_guarded(
    host: Host,
    restore_text: str,
    guard_seconds: float = 15,
    confirm: Callable[[Host], Host] | None = None,
    state_dir: str = GUARD_DIR,
    family: str = "ipv4",
) -> GuardOutcome:
    """Apply ``restore_text`` under a rollback guard that the host runs itself.

    1. Save every table (``iptables-save``) to a root-only file under ``state_dir``.
    2. Start a detached timer on the host (``setsid``, PID recorded) that restores the saved
       rules after ``guard_seconds`` unless cancelled.
    3. Apply with ``iptables-restore --noflush``.
    4. Open a NEW SSH connection and, over it, cancel the timer and delete the backup.

    host: the target (its current connection is not trusted as proof).
    restore_text: the restore input to apply (any tables).
    guard_seconds: how long the host waits for the confirmation.
    confirm: ``confirm(host) -> Host`` opens the independent connection the confirmation runs
        over (default :func:`reconnect`); raising :class:`ConnectError` means "the path is cut".
    state_dir: root-only directory on the host for the backup and PID files.
    family: ``"ipv4"`` (iptables-save/-restore) or ``"ipv6"`` (ip6tables-save/-restore): the guard saves,
        applies and rolls back that family only, so each family is one all-or-nothing change.

    Raises :class:`StepError` when the restore is refused (the timer is cancelled, nothing
    changed), or when the confirmation fails: then it waits for the host's timer, verifies the
    previous rules are back and says so.

    Example: ``apply_guarded(host, "*filter\\n-A INPUT -p tcp --dport 22 -j DROP\\nCOMMIT\\n", 4)``
    raises StepError("... rolled back by the host itself ...").
    """
    if guard_seconds <= 0:
        raise ValueError("guard_seconds must be positive")
    require_iptables(host, family)
    saved = run_iptables(host, [tool(family, "-save")]).stdout
    rollback = rollback_text(saved, restore_text)
    files = GuardFiles(state_dir.rstrip("/"), uuid.uuid4().hex[:12])
    q = shlex.quote
    host.run(
        f"umask 077 && mkdir -p {q(files.dir)} && chmod 700 {q(files.dir)} && cat > {q(files.backup)}",
        sudo=True,
        stdin=rollback,
        timeout=30,
    )
    started = time.monotonic()
    pid_text = host.run(timer_script(files, guard_seconds, family), sudo=True, timeout=30).stdout.strip()
    if not pid_text.isdigit():
        host.run(["rm", "-f", files.backup], sudo=True, check=False, timeout=30)
        raise StepError(f"Could not start the rollback timer on {host.name} (got {pid_text!r}); nothing was applied.")
    pid = int(pid_text)

    why = ""
    try:
        # A rule set that cuts SSH may also stall this very call: give it about the guard's length.
        restore(host, restore_text, timeout=max(10.0, guard_seconds), family=family)
    except StepError:
        # Refused: nothing was applied and this connection still works, so cancel here.
        host.run(confirm_script(files), sudo=True, check=False, timeout=30)
        raise
    except (CommandTimeout, ConnectError, OSError, EOFError) as e:
        why = f"the connection stalled while applying ({e.__class__.__name__})"

    opener = confirm or (lambda h: reconnect(h, connect_timeout=max(1.0, min(5.0, guard_seconds / 3))))
    answer = ""
    if not why:
        fresh = None
        try:
            fresh = opener(host)
            answer = fresh.run(confirm_script(files), sudo=True, timeout=max(5.0, guard_seconds)).stdout.strip()
        except (ConnectError, CommandError) as e:
            why = f"a new SSH connection failed ({str(e).split('. ')[0]})"
        finally:
            if fresh is not None and fresh is not host:
                fresh.close()
    if answer == "confirmed":
        return GuardOutcome(True, pid, files.backup, guard_seconds, "a new SSH connection confirmed the rules")
    if answer == "expired":
        why = f"the confirmation came after the {guard_seconds:g} s guard had fired"
    raise StepError(
        _rolled_back_message(host, files, guard_seconds, started, rollback, why or "no confirmation", family)
    )


def _rolled_back_message(
    host: Host, files: GuardFiles, seconds: float, started: float, rollback: str, why: str, family: str = "ipv4"
) -> str:
    """Wait for the host's timer, check the saved rules are back, and word the error."""
    time.sleep(max(0.0, started + seconds + 1.0 - time.monotonic()))
    head = f"The new rules were applied on {host.name}, but {why}."
    attempts, last = 5, ""
    # Retry only connecting, a bounded number of times: TCP needs a moment after the rollback.
    for attempt in range(1, attempts + 1):
        fresh = None
        try:
            fresh = reconnect(host, connect_timeout=5)
            status = fresh.run(
                f"ls {shlex.quote(files.dir)} | grep -F {shlex.quote(files.token)} || true", sudo=True, timeout=30
            ).stdout
            now = parse_save(run_iptables(fresh, [tool(family, "-save")]).stdout)
            diff = ruleset_diff(parse_save(rollback), now)
            if diff:
                return (
                    f"{head} The host's guard should have restored the previous rules after {seconds:g} s, but "
                    f"they differ from the backup: {'; '.join(diff[:3])}. Restore by hand: "
                    f"sudo {tool(family, '-restore')} < {files.path('firing')} (or {files.backup})."
                )
            fresh.run(
                f"rm -f {shlex.quote(files.path('rolled-back'))} {shlex.quote(files.path('log'))} "
                f"{shlex.quote(files.pid)}; rmdir {shlex.quote(files.dir)} 2>/dev/null || true",
                sudo=True,
                check=False,
                timeout=30,
            )
            marker = "rolled-back" in status
            return (
                f"{head} The rules were rolled back by the host itself after {seconds:g} s: {tool(family, '-save')} on "
                f"the host matches the rules saved before the change again"
                f"{'' if marker else ' (the timer left no marker; checked by content)'}. Nothing of the change "
                "remains; fix the rules so they keep SSH open and retry."
            )
        except (ConnectError, CommandError) as e:
            last = str(e)
            if attempt < attempts:
                time.sleep(2)
        finally:
            if fresh is not None:
                fresh.close()
    return (
        f"{head} The host's guard should have restored the previous rules {seconds:g} s after the change, "
        f"but {host.name} could not be reached to verify it after {attempts} attempts ({last}). The saved "
        f"rules are in {files.backup} (or .firing) on the host."
    )


__all__ = [
    "GUARD_DIR",
    "GuardFiles",
    "GuardOutcome",
    "apply_guarded",
    "confirm_script",
    "reconnect",
    "require_iptables",
    "restore",
    "rollback_text",
    "timer_script",
]
