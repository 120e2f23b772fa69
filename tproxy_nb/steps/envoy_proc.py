"""The three Envoys on a host: validate, start, stop, status, admin endpoints, logs.

Every Envoy runs as the envoy user with its own ``--base-id``; command lines, paths
and the parsers of what Envoy prints are :mod:`tproxy_nb.render.envoy`'s.

Example::

    start(host, settings)
    status(host, settings)
    admin(host, settings, "igw", "/stats?filter=rbac")
    fetch_logs(host, settings)["igw"]["debug"]
"""

from __future__ import annotations

import re
import shlex
import time

from ..analysis.trace import parse_all
from ..errors import CommandError, StepError, TproxyError
from ..remote.host import Host
from ..render.envoy import (
    FLUSH_INTERVAL_MS,
    NAMES,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    admin_port,
    check_name,
    config_path,
    launch_script,
    listen_ports,
    log_path,
    out_path,
    parse_counters,
    parse_listeners,
    parse_loggers,
    parse_ss,
    parse_version,
    pid_path,
    shm_path,
    validate_command,
    wait_ready_script,
)
from ..settings import LOG_LEVELS, Settings
from . import facts
from .plan import Plan, StartEnvoys, StopEnvoys


def _names(names) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    for n in names:
        check_name(n)
    return names


def _tail(host: Host, path: str, n: int = 12) -> str:
    r = host.run(["tail", "-n", str(n), "--", path], sudo=True, check=False, timeout=30)
    return r.stdout.rstrip() if r.ok else ""


def validate(host: Host, settings: Settings, name: str | None = None) -> None:
    """Check configs with ``envoy --mode validate`` as the envoy user (so cert permissions count too).

    Validation opens the access-log files, so the log directory is created first.
    Raises :class:`StepError` naming the file, with the end of Envoy's message.

    name: one Envoy, or None for all three.

    Example: ``validate(host, s, "igw")``.
    """
    _ensure_dirs(host, settings)
    for n in _names(NAMES if name is None else name):
        r = host.run(validate_command(settings, n), user=settings.envoy.user, check=False, timeout=120)
        if not r.ok:
            tail = "\n".join(x for x in (r.tail(8, "stderr"), r.tail(8)) if x)
            raise StepError(
                f"Envoy rejects {config_path(settings, n)} (exit {r.exit_code}):\n{tail}\n"
                "Fix the template or settings, then plan_configs(...).apply(host); nothing was started."
            )


def pids(host: Host, settings: Settings, name: str) -> list[int]:
    """PIDs of Envoy ``name``: the recorded one if it is alive and is ours, plus any stray with our config.

    Example: ``pids(host, s, "igw")`` -> ``[4242]``.
    """
    return list(facts.envoy_processes(host, settings, _names(name))[name].pids)


def _shm_users(host: Host, path: str) -> list[int]:
    """PIDs that still map the shared-memory file ``path``."""
    script = f"grep -l -F -- {shlex.quote(path)} /proc/[0-9]*/maps 2>/dev/null || true"
    out = host.run(script, sudo=True, check=False, timeout=30).stdout
    return sorted(int(m) for m in re.findall(r"/proc/(\d+)/maps", out))


def _clean_shm(host: Host, settings: Settings, name: str, strict: bool = True) -> None:
    """Remove the hot-restart shared memory of ``name`` unless a live process maps it.

    A leftover file owned by another uid makes the next Envoy with that base-id panic.
    strict: raise when another process maps it (before a start); else leave it be (stop).
    """
    path = shm_path(settings, name)
    users = _shm_users(host, path)
    if users and not strict:
        return
    if users:
        raise StepError(
            f"{path} (base-id {settings.base_ids[name]}) is in use by PID(s) {', '.join(map(str, users))}, "
            f"which is not the {name} Envoy we started. Stop that process or give {name} another base_ids value."
        )
    host.run(["rm", "-f", "--", path], sudo=True, timeout=30)


def _ensure_dirs(host: Host, settings: Settings) -> None:
    """Create the log and run directories (envoy-owned, 0750) when they are missing."""
    a = settings.envoy
    state = facts.files(host, [settings.paths.log, settings.paths.run])
    missing = [d for d, st in state.items() if st is None]
    if missing:
        host.run(["install", "-d", "-m", "750", "-o", a.user, "-g", a.group, "--", *missing], sudo=True, timeout=30)


def _check_ports(host: Host, settings: Settings, names) -> None:
    """Raise naming the port and its holder when a port ``names`` need is taken."""
    listening = parse_ss(host.run(["ss", "-ltnpH"], sudo=True, timeout=30).stdout)
    for name in names:
        for key, port in listen_ports(settings, name).items():
            holders = [r for r in listening if r["port"] == port]
            if holders:
                who = ", ".join(f"{r['process']} (pid {r['pid']}) on {r['address']}" for r in holders)
                raise StepError(
                    f"Port {port} (ports.{key}, needed by {name}) is in use by {who}. "
                    f"Stop that process or change ports.{key} in the settings; nothing was started."
                )


def _failure_report(host: Host, settings: Settings, name: str) -> str:
    parts = [f"--- {p} ---\n{t}" for p in (out_path(settings, name), log_path(settings, name)) if (t := _tail(host, p))]
    return "\n".join(parts) or "(no log written)"


def plan_processes(state: dict[str, facts.EnvoyState], settings: Settings, names=NAMES) -> Plan:
    """Start the Envoys ``names`` that are not running and ready (pure; nothing when all are).

    state: :func:`tproxy_nb.steps.facts.envoy_processes`.

    Example: ``plan_processes({"igw": EnvoyState()}, s, ["igw"]).changes[0].description``
    -> ``"start igw as tpx-envoy"``.
    """
    plan = Plan("envoys")
    names = _names(names)
    todo = tuple(n for n in names if not (state[n].running and state[n].ready))
    if todo:
        plan.add(f"start {', '.join(todo)} as {settings.envoy.user}", StartEnvoys(todo, settings))
    else:
        plan.note(f"{', '.join(names)} running and ready")
    return plan


def plan_stop(state: dict[str, facts.EnvoyState], settings: Settings) -> Plan:
    """Stop every Envoy of ours that runs (pure; nothing when none does).

    Example: ``plan_stop({n: EnvoyState() for n in NAMES}, s).empty`` -> True.
    """
    plan = Plan("envoys")
    running = tuple(n for n in NAMES if n in state and state[n].running)
    if running:
        plan.add(f"stop {', '.join(running)}", StopEnvoys(running, settings))
    else:
        plan.note("no Envoy of ours is running")
    return plan


def plan_start(host: Host, settings: Settings, names=NAMES) -> Plan:
    """Read which Envoys run and plan starting the others (:func:`plan_processes`).

    Example: ``plan_start(host, s).apply(host)``.
    """
    names = _names(names)
    return plan_processes(facts.envoy_processes(host, settings, names), settings, names)


def needs_net_admin(settings: Settings, name: str) -> bool:
    """True for the sidecar under ``interception: tproxy``: its transparent listeners need CAP_NET_ADMIN.

    Example: ``needs_net_admin(s.replace(interception="tproxy"), "sidecar")`` -> True.
    """
    return name == "sidecar" and settings.interception == "tproxy"


def with_net_admin(settings: Settings, script: str) -> list[str]:
    """Run ``script`` as the envoy user holding CAP_NET_ADMIN, and nothing more (run it as root).

    ``setpriv`` (util-linux) switches to the envoy uid, gid and groups and raises the capability as an
    *ambient* one, which survives the ``exec`` of sh and of Envoy (a file capability on the binary would
    do it for every user of it). Envoy never runs as root; it can set IP_TRANSPARENT, which TPROXY needs.

    Example: ``host.run(with_net_admin(s, launch_script(s, "sidecar")), sudo=True)``.
    """
    a = settings.envoy
    caps = ["--inh-caps", "+net_admin", "--ambient-caps", "+net_admin"]
    return ["setpriv", "--reuid", a.user, "--regid", a.group, "--init-groups", *caps, "--", "sh", "-c", script]


def start(host: Host, settings: Settings, names=NAMES) -> list[str]:
    """Start the Envoys that are not running; leave running and ready ones alone.

    Validates first; fails before starting anything when a port is taken.
    Waits up to ``READY_TIMEOUT_S`` for each ``/ready`` to say LIVE.

    names: which Envoys (default all three).
    Returns the names that were started.

    Example: ``start(host, s)`` -> ``["sidecar", "igw", "igw_http"]`` (then ``[]``).
    """
    names = _names(names)
    state = facts.envoy_processes(host, settings, names)
    # Started but not ready (still starting, or stuck): wait below instead of starting twice.
    todo = [(name, not state[name].running) for name in names if not (state[name].running and state[name].ready)]
    if not todo:
        return []
    for name, _ in todo:
        validate(host, settings, name)
    _check_ports(host, settings, [n for n, launch in todo if launch])
    for name, launch in todo:
        if launch:
            _clean_shm(host, settings, name)
            if needs_net_admin(settings, name):
                host.run(with_net_admin(settings, launch_script(settings, name)), sudo=True, timeout=30)
            else:
                host.run(launch_script(settings, name), user=settings.envoy.user, timeout=30)
    for name, _ in todo:
        r = host.run(
            wait_ready_script(settings, name), user=settings.envoy.user, check=False, timeout=READY_TIMEOUT_S + 15
        )
        if not r.ok:
            why = "exited" if r.exit_code == 3 else f"did not report LIVE on /ready within {READY_TIMEOUT_S} s"
            raise StepError(f"Envoy {name} {why}. End of its logs:\n{_failure_report(host, settings, name)}")
    return [name for name, launch in todo if launch]


def stop(host: Host, settings: Settings, names=NAMES) -> list[str]:
    """Stop Envoys: SIGTERM, wait up to ``STOP_TIMEOUT_S``, then SIGKILL; remove PID and shm files.

    Succeeds when nothing was running. Returns the names that were running.

    Example: ``stop(host, s)`` -> ``["sidecar", "igw", "igw_http"]``.
    """
    stopped = []
    names = _names(names)
    state = facts.envoy_processes(host, settings, names)
    for name in names:
        found = state[name].pids
        if found:
            stopped.append(name)
            ids = " ".join(map(str, found))
            script = (
                f"kill -TERM {ids} 2>/dev/null; i=0; "
                f"while [ $i -lt {STOP_TIMEOUT_S * 4} ] && kill -0 {ids} 2>/dev/null; do sleep 0.25; i=$((i+1)); done; "
                f"kill -KILL {ids} 2>/dev/null; i=0; "
                f"while [ $i -lt 20 ] && kill -0 {ids} 2>/dev/null; do sleep 0.25; i=$((i+1)); done; "
                f"! kill -0 {ids} 2>/dev/null"
            )
            r = host.run(script, sudo=True, check=False, timeout=STOP_TIMEOUT_S + 20)
            if not r.ok:
                raise StepError(
                    f"Envoy {name} (PID {ids}) survived SIGKILL; check 'ps -o pid,stat,cmd -p {ids}' on {host.name}."
                )
        host.run(["rm", "-f", "--", pid_path(settings, name)], sudo=True, timeout=30)
        # Not strict: a stranger's Envoy on the same base-id is start()'s problem, not a failed stop.
        _clean_shm(host, settings, name, strict=False)
    return stopped


def admin(host: Host, settings: Settings, name: str, path: str, method: str = "GET") -> str:
    """Call an admin endpoint of ``name`` on the target (curl to 127.0.0.1 as the envoy user).

    path: e.g. ``/ready``, ``/stats?filter=rbac``, ``/clusters``, ``/listeners``.
    method: ``GET`` to read; ``POST`` for the endpoints that change something (``/logging?rbac=debug``).

    Example: ``print(admin(host, s, "igw", "/stats?filter=rbac"))``.
    """
    if not path.startswith("/"):
        path = "/" + path
    url = f"http://127.0.0.1:{admin_port(settings, name)}{path}"
    cmd = ["curl", "-sS", "--max-time", "10", "-X", method, url]
    try:
        return host.run(cmd, user=settings.envoy.user, timeout=30).stdout
    except CommandError as e:
        raise StepError(
            f"The admin interface of {name} ({url}) did not answer: {e.result.tail(2, 'stderr')}. "
            "Is it running? See status()."
        ) from None


def set_log_level(host: Host, settings: Settings, name: str, logger: str, level: str) -> dict[str, str]:
    """Set one logger of the running Envoy ``name`` to ``level`` (admin ``POST /logging?<logger>=<level>``).

    No restart, no config change: the level holds until the Envoy restarts, which starts it at its
    command line's level again (``rbac`` at ``info``: :data:`tproxy_nb.render.envoy.RUNTIME_LOGGERS`).
    Returns every logger's level as Envoy reports it after the change.

    logger: an Envoy logger name (``rbac``, ``http``, ``connection``...).
    level: one of ``trace debug info warning error critical off``.

    Example: ``set_log_level(host, s, "igw", "rbac", "debug")["rbac"]`` -> ``"debug"``.
    """
    if level not in LOG_LEVELS:
        raise StepError(f"Log level {level!r} is not one of {', '.join(LOG_LEVELS)}; nothing was changed.")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", logger):
        raise StepError(f"{logger!r} is not an Envoy logger name (such as rbac or http); nothing was changed.")
    answer = admin(host, settings, name, f"/logging?{logger}={level}", method="POST")
    levels = parse_loggers(answer)
    if levels.get(logger) != level:
        said = next((line for line in answer.splitlines() if line.strip()), "no answer")
        raise StepError(f"Envoy {name} did not set logger {logger!r} to {level}: {said}. Nothing was changed.")
    return levels


def counters(host: Host, settings: Settings, name: str, path: str = "/stats") -> dict[str, int]:
    """The integer counters Envoy ``name`` shows at ``path`` now (``/stats?filter=rbac``, ``/clusters``).

    Example: ``counters(host, s, "igw", "/stats?filter=rbac")["http.igw.rbac.denied"]`` -> ``5``.
    """
    return parse_counters(admin(host, settings, name, path))


#: The gateways, each with the ``stat_prefix`` of its connection manager (templates/<name>.yaml).
GATEWAYS = ("igw", "igw_http")


def gateway_counts(host: Host, settings: Settings) -> dict[str, dict[str, int]]:
    """Connections and requests each gateway has taken since it started (its connection manager's counters).

    Read from ``http.<gateway>.downstream_cx_total`` and ``downstream_rq_total``; only differences between
    two reads say something (:func:`tproxy_nb.analysis.pool.per_gateway`).

    Example: ``gateway_counts(host, s)["igw"]`` -> ``{"connections": 12, "requests": 40}``.
    """
    out = {}
    for name in GATEWAYS:
        found = counters(host, settings, name, "/stats?filter=downstream_")
        out[name] = {
            "connections": found.get(f"http.{name}.downstream_cx_total", 0),
            "requests": found.get(f"http.{name}.downstream_rq_total", 0),
        }
    return out


def settle_logs() -> None:
    """Wait until what the Envoys logged so far is in their files (they write every FLUSH_INTERVAL_MS)."""
    time.sleep(2 * FLUSH_INTERVAL_MS / 1000)


def logs(host: Host, settings: Settings, name: str, access: bool = False, settle: bool = True) -> str:
    """The debug log (or JSON access log) of ``name`` as text, including what was logged just now.

    settle: first wait one flush of Envoy's log buffer (:func:`settle_logs`); pass False when you already did.

    Example: ``logs(host, s, "igw", access=True).splitlines()[-1]``.
    """
    if settle:
        settle_logs()
    path = log_path(settings, name, access=access)
    try:
        return str(host.get(path, sudo=True))  # no local path given: the text itself
    except CommandError:
        raise
    except TproxyError as e:
        raise StepError(f"Cannot read {path}: {e} Has {name} been started?") from None


def version(host: Host, settings: Settings) -> str:
    """The Envoy release installed at ``paths.envoy`` (e.g. ``"1.40.0"``).

    Example: ``version(host, s)`` -> ``"1.40.0"``.
    """
    r = host.run([settings.paths.envoy, "--version"], user=settings.envoy.user, check=False, timeout=60)
    if not r.ok:
        raise StepError(
            f"{settings.paths.envoy} --version failed (exit {r.exit_code}): {r.tail(3, 'stderr') or r.tail(3)}. "
            "Is Envoy installed (provision)?"
        )
    return parse_version(r.stdout + r.stderr)


def status(host: Host, settings: Settings):
    """One row per Envoy: name, pid, running, ready, admin_port, listeners, log_tail (when dead).

    Example: ``status(host, s)[["name", "running", "ready"]]``.
    """
    import pandas as pd

    rows = []
    state = facts.envoy_processes(host, settings, NAMES)
    for name in NAMES:
        found, ready = state[name].pids, state[name].ready
        listeners = ""
        if ready:
            listeners = ", ".join(parse_listeners(admin(host, settings, name, "/listeners")))
        rows.append(
            {
                "name": name,
                "pid": found[0] if found else None,
                "running": bool(found),
                "ready": ready,
                "admin_port": admin_port(settings, name),
                "listeners": listeners,
                "log_tail": "" if found else _failure_report(host, settings, name),
            }
        )
    return pd.DataFrame(
        rows, columns=["name", "pid", "running", "ready", "admin_port", "listeners", "log_tail"]
    ).astype({"pid": "Int64"})


def fetch_logs(host: Host, settings: Settings) -> dict[str, dict]:
    """Download and parse the three Envoys' debug and access logs from the host."""
    settle_logs()
    texts = {
        name: {
            "debug": logs(host, settings, name, settle=False),
            "access": logs(host, settings, name, access=True, settle=False),
        }
        for name in NAMES
    }
    return parse_all(texts)
