"""The three Envoys: render their configs, validate, start, stop, inspect.

``sidecar`` takes the app's redirected connections and tunnels them over mTLS
to the gateways ``igw`` (TLS via HTTP CONNECT) and ``igw_http`` (plain HTTP),
which apply the RBAC allowlist and forward to the internet. Configs are the
commented templates in ``configs/<name>.yaml`` filled from the settings.

Every Envoy runs as the envoy user with its own ``--base-id`` (hot-restart
shared memory ``/dev/shm/envoy_shared_memory_<10*base-id>``), debug log
``<paths.log>/<name>.log``, JSON access log ``<paths.log>/<name>.access.log``,
PID in ``<paths.run>/<name>.pid``.

Example::

    print(render(settings, "igw"))
    plan_configs(host, settings).apply(host)
    start(host, settings)
    status(host, settings)
"""

from __future__ import annotations

import re
import shlex
import string
import time
from pathlib import Path

import yaml

from . import certs
from .errors import CommandError, StepError, TproxyError
from .hosts import Host
from .logs import ACCESS_LOG_FORMAT  # the json_format, defined next to its parser
from .settings import Settings
from .steps import Plan

NAMES: tuple[str, ...] = ("sidecar", "igw", "igw_http")
#: How often Envoy writes its buffered debug and access logs to their files.
FLUSH_INTERVAL_MS = 200
#: The commented templates a learner reads.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: Seconds to wait for an Envoy's /ready to say LIVE, and for it to exit on SIGTERM.
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10

# Placeholders that stand alone on a line and take a multi-line YAML block,
# indented like the placeholder.
_BLOCKS = ("access_log_format", "rbac_policies")


# --------------------------------------------------------------------------- pure: names and paths


def _check_name(name: str) -> str:
    if name not in NAMES:
        raise StepError(f"Unknown Envoy {name!r}; the chain has {', '.join(NAMES)}.")
    return name


def config_path(settings: Settings, name: str) -> str:
    """Where the rendered config of ``name`` lives on the target.

    Example: ``config_path(s, "igw")`` -> ``"/opt/tproxy-nb/etc/igw.yaml"``.
    """
    return f"{settings.paths.etc}/{_check_name(name)}.yaml"


def log_path(settings: Settings, name: str, access: bool = False) -> str:
    """The debug log (or, with ``access``, the JSON access log) of ``name`` on the target.

    Example: ``log_path(s, "sidecar", access=True)`` -> ``"/opt/tproxy-nb/log/sidecar.access.log"``.
    """
    return f"{settings.paths.log}/{_check_name(name)}{'.access' if access else ''}.log"


def out_path(settings: Settings, name: str) -> str:
    """Stdout/stderr of the process: errors printed before ``--log-path`` is open land here."""
    return f"{settings.paths.log}/{_check_name(name)}.out"


def pid_path(settings: Settings, name: str) -> str:
    """The file holding the PID of the running Envoy ``name``."""
    return f"{settings.paths.run}/{_check_name(name)}.pid"


def shm_path(settings: Settings, name: str) -> str:
    """Hot-restart shared memory Envoy leaves behind (measured with 1.40: 10 x base-id).

    Example: ``shm_path(s, "sidecar")`` -> ``"/dev/shm/envoy_shared_memory_110"``.
    """
    return f"/dev/shm/envoy_shared_memory_{10 * settings.base_ids[_check_name(name)]}"


def admin_port(settings: Settings, name: str) -> int:
    """The admin port of ``name`` (on 127.0.0.1 of the target)."""
    return getattr(settings.ports, f"admin_{_check_name(name)}")


def listen_ports(settings: Settings, name: str) -> dict[str, int]:
    """Every TCP port ``name`` binds, by settings key.

    Example: ``listen_ports(s, "igw")`` -> ``{"igw": 12010, "admin_igw": 9902}``.
    """
    p = settings.ports
    own = {"sidecar": {"http_redirect": p.http_redirect, "tls_redirect": p.tls_redirect},
           "igw": {"igw": p.igw}, "igw_http": {"igw_http": p.igw_http}}[_check_name(name)]
    return {**own, f"admin_{name}": admin_port(settings, name)}


def command(settings: Settings, name: str) -> list[str]:
    """The Envoy command line for ``name`` (argument list; the order is relied on to find the process).

    Example: ``command(s, "igw")[:3]`` -> ``["/opt/tproxy-nb/bin/envoy", "-c", "/opt/tproxy-nb/etc/igw.yaml"]``.
    """
    return [settings.paths.envoy, "-c", config_path(settings, name),
            "--base-id", str(settings.base_ids[name]),
            "-l", settings.log_level,
            "--log-path", log_path(settings, name),
            # Envoy buffers log files for 10 s by default; a reader right after a request would see nothing.
            "--file-flush-interval-msec", str(FLUSH_INTERVAL_MS)]


def validate_command(settings: Settings, name: str, envoy_path: str | None = None) -> list[str]:
    """``envoy --mode validate`` for ``name``'s config (no listeners opened, cert files read).

    envoy_path: binary to use instead of ``settings.paths.envoy`` (a local check).

    Example: ``validate_command(s, "igw")`` -> ``[".../envoy", "--mode", "validate", "-c", ".../igw.yaml", "-l", "error"]``.
    """
    return [envoy_path or settings.paths.envoy, "--mode", "validate", "-c", config_path(settings, name), "-l", "error"]


# --------------------------------------------------------------------------- pure: rendering


def authority_regex(host: str) -> str:
    """RE2 pattern matching ``host`` as an :authority, with an optional port.

    Host names are validated by the settings (letters, digits, '-', '.'),
    so only the dots need escaping.

    Example: ``authority_regex("www.google.com")`` -> ``r"^www\\.google\\.com(:[0-9]+)?$"``.
    """
    return "^" + host.replace(".", r"\.") + "(:[0-9]+)?$"


def rbac_policies(allowed_hosts) -> dict:
    """One RBAC policy per allowed host, named so the debug log says which one matched.

    Example: ``list(rbac_policies(["www.google.com"]))`` -> ``["allow-www.google.com"]``.
    """
    return {
        f"allow-{host}": {
            "permissions": [{"header": {"name": ":authority", "string_match": {"safe_regex": {"regex": authority_regex(host)}}}}],
            "principals": [{"any": True}],
        }
        for host in allowed_hosts
    }


def template_values(settings: Settings, name: str) -> dict[str, str]:
    """Every scalar ``${placeholder}`` of the templates, for Envoy ``name``.

    Example: ``template_values(s, "igw")["admin_port"]`` -> ``"9902"``.
    """
    p = settings.ports
    values = {
        "admin_port": admin_port(settings, name),
        "http_redirect_port": p.http_redirect,
        "tls_redirect_port": p.tls_redirect,
        "igw_port": p.igw,
        "igw_http_port": p.igw_http,
        "access_log_path": log_path(settings, name, access=True),
        "config_path": config_path(settings, name),
        "igw_san": certs.GATEWAY_DNS["igw"],
        "igw_http_san": certs.GATEWAY_DNS["igw_http"],
        "sidecar_uri": certs.SIDECAR_URI,
        **certs.remote_paths(settings),
    }
    return {k: str(v) for k, v in values.items()}


def _block(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000).rstrip("\n")


def fill_blocks(template: str, blocks: dict[str, str]) -> str:
    """Replace each line that holds only ``${name}`` by ``blocks[name]``, indented like that line.

    ``$`` in a block is doubled so the following string.Template pass leaves it alone.

    Example: ``fill_blocks("a:\\n  ${b}\\n", {"b": "x: 1\\ny: 2"})`` -> ``"a:\\n  x: 1\\n  y: 2\\n"``
    (before the ``$`` unescaping done by string.Template).
    """
    for key, text in blocks.items():
        pattern = re.compile(r"^([ \t]*)\$\{" + re.escape(key) + r"\}[ \t]*$", re.M)

        def indent(m: re.Match, text=text) -> str:
            return "\n".join(m[1] + line if line else line for line in text.replace("$", "$$").splitlines())

        template = pattern.sub(indent, template)
    return template


def render(settings: Settings, name: str) -> str:
    """The Envoy config of ``name`` as YAML text, from ``configs/<name>.yaml`` and the settings.

    settings: ports, paths, allowed hosts.
    name: ``sidecar``, ``igw`` or ``igw_http``.

    Example: ``yaml.safe_load(render(s, "igw"))["admin"]``.
    """
    template = (CONFIG_DIR / f"{_check_name(name)}.yaml").read_text()
    blocks = {"access_log_format": _block(ACCESS_LOG_FORMAT), "rbac_policies": _block(rbac_policies(settings.allowed_hosts))}
    try:
        return string.Template(fill_blocks(template, blocks)).substitute(template_values(settings, name))
    except (KeyError, ValueError) as e:
        raise StepError(f"configs/{name}.yaml has a placeholder render() does not fill: {e}.") from None


def render_all(settings: Settings) -> dict[str, str]:
    """``{name: YAML text}`` for the three Envoys.

    Example: ``sorted(render_all(s))`` -> ``["igw", "igw_http", "sidecar"]``.
    """
    return {name: render(settings, name) for name in NAMES}


# --------------------------------------------------------------------------- pure: parsing facts


_SS_USERS_RE = re.compile(r'\("([^"]*)",pid=(\d+)')


def parse_ss(text: str) -> list[dict]:
    """Parse ``ss -ltnpH`` into ``[{"address", "port", "process", "pid"}]`` (one row per process).

    Example: ``parse_ss('LISTEN 0 4096 127.0.0.1:9901 0.0.0.0:* users:(("envoy",pid=7,fd=3))')``
    -> ``[{"address": "127.0.0.1", "port": 9901, "process": "envoy", "pid": 7}]``.
    """
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].startswith("LISTEN"):
            continue
        address, _, port = parts[3].rpartition(":")
        if not port.isdigit():
            continue
        users = _SS_USERS_RE.findall(line) or [("?", "0")]
        rows.extend({"address": address, "port": int(port), "process": proc, "pid": int(pid) or None} for proc, pid in users)
    return rows


def parse_listeners(text: str) -> list[str]:
    """Addresses from the admin ``/listeners`` text (``name::address`` per line).

    Example: ``parse_listeners("igw::127.0.0.1:12010\\n")`` -> ``["127.0.0.1:12010"]``.
    """
    return [line.split("::", 1)[1] for line in text.splitlines() if "::" in line]


def parse_version(text: str) -> str:
    """The release number from ``envoy --version`` output, else the output itself.

    Example: ``parse_version("envoy  version: 9e55/1.40.0/Clean/RELEASE/BoringSSL")`` -> ``"1.40.0"``.
    """
    m = re.search(r"version:\s*\S+?/(\d+\.\d+\.\d+[^/\s]*)/", text)
    return m[1] if m else text.strip()


def _ere_escape(text: str) -> str:
    """Escape ``text`` for a POSIX extended regex (pgrep)."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def process_pattern(settings: Settings, name: str) -> str:
    """pgrep -f pattern for the Envoy ``name`` we started (anchored: wrapper shells do not match).

    Example: ``process_pattern(s, "igw")`` -> ``"^/opt/tproxy-nb/bin/envoy -c /opt/tproxy-nb/etc/igw\\\\.yaml( |$)"``.
    """
    return f"^{_ere_escape(settings.paths.envoy)} -c {_ere_escape(config_path(settings, name))}( |$)"


def launch_script(settings: Settings, name: str) -> str:
    """Shell that starts Envoy ``name`` detached and records its PID (run as the envoy user).

    Envoy 1.40 sets PR_SET_PDEATHSIG(SIGTERM): it dies with its parent. So the
    parent is a ``setsid sh`` that stays and waits (the trailing ``echo`` keeps
    sh from exec-ing Envoy in its place), not the SSH command's shell, which
    exits right away.

    Example: ``host.run(launch_script(s, "igw"), user=s.envoy.user)``.
    """
    q = shlex.quote
    pid, exit_file = pid_path(settings, name), f"{settings.paths.run}/{name}.exit"
    inner = f"{shlex.join(command(settings, name))} & echo $! > {q(pid)}; wait $!; echo $? > {q(exit_file)}"
    return f"rm -f {q(pid)} {q(exit_file)}; setsid sh -c {q(inner)} </dev/null >{q(out_path(settings, name))} 2>&1 &"


def wait_ready_script(settings: Settings, name: str, timeout: int = READY_TIMEOUT_S) -> str:
    """Shell polling ``/ready`` until LIVE: exit 0 live, 3 the process died, 2 timed out.

    Example: ``host.run(wait_ready_script(s, "igw"), user=s.envoy.user, check=False).exit_code``.
    """
    q = shlex.quote
    url = f"http://127.0.0.1:{admin_port(settings, name)}/ready"
    pid = q(pid_path(settings, name))
    return (
        f"end=$(( $(date +%s) + {int(timeout)} )); "
        f"while [ $(date +%s) -lt $end ]; do "
        f"[ \"$(curl -s --max-time 1 {q(url)})\" = LIVE ] && exit 0; "
        f"[ -s {pid} ] && ! kill -0 \"$(cat {pid})\" 2>/dev/null && exit 3; "
        f"sleep 0.25; done; exit 2"
    )


# --------------------------------------------------------------------------- on the target


def plan_configs(host: Host, settings: Settings) -> Plan:
    """Plan uploading the rendered configs to ``paths.etc`` (root-owned, readable by the envoy group).

    The directory is :func:`tproxy_nb.provision.plan_dirs`'s to make.

    Example: ``print(plan_configs(host, s)); plan_configs(host, s).apply(host)``.
    """
    plan = Plan("envoy configs")
    group = settings.envoy.group
    for name, text in render_all(settings).items():
        remote = config_path(settings, name)
        sub = certs.plan_file(host, remote, text.encode(), mode=0o640, owner="root", group=group, label=f"{name} config")
        if sub is None:
            plan.note(f"{remote} is up to date")
        else:
            plan.changes.extend(sub.changes)
    return plan


def _names(names) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    for n in names:
        _check_name(n)
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
            raise StepError(f"Envoy rejects {config_path(settings, n)} (exit {r.exit_code}):\n{tail}\n"
                            "Fix the template or settings, then plan_configs(...).apply(host); nothing was started.")


def pids(host: Host, settings: Settings, name: str) -> list[int]:
    """PIDs of Envoy ``name``: the recorded one if it is alive and is ours, plus any stray with our config.

    Example: ``pids(host, s, "igw")`` -> ``[4242]``.
    """
    found: set[int] = set()
    recorded = host.run(["cat", "--", pid_path(settings, name)], sudo=True, check=False, timeout=30).stdout.strip()
    if recorded.isdigit():
        # A recycled PID must not be taken for ours: check its command line.
        cmdline = host.run(["cat", f"/proc/{recorded}/cmdline"], sudo=True, check=False, timeout=30).stdout
        if cmdline.split("\0")[:3] == command(settings, name)[:3]:
            found.add(int(recorded))
    r = host.run(["pgrep", "-f", "--", process_pattern(settings, name)], sudo=True, check=False, timeout=30)
    found.update(int(x) for x in r.stdout.split() if x.isdigit())
    return sorted(found)


def _ready(host: Host, settings: Settings, name: str) -> bool:
    url = f"http://127.0.0.1:{admin_port(settings, name)}/ready"
    r = host.run(["curl", "-s", "--max-time", "2", url], user=settings.envoy.user, check=False, timeout=30)
    return r.stdout.strip() == "LIVE"


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
        raise StepError(f"{path} (base-id {settings.base_ids[name]}) is in use by PID(s) {', '.join(map(str, users))}, "
                        f"which is not the {name} Envoy we started. Stop that process or give {name} another base_ids value.")
    host.run(["rm", "-f", "--", path], sudo=True, timeout=30)


def _ensure_dirs(host: Host, settings: Settings) -> None:
    """Create the log and run directories (envoy-owned, 0750) when they are missing."""
    a = settings.envoy
    for d in (settings.paths.log, settings.paths.run):
        host.run(f"test -d {shlex.quote(d)} || install -d -m 750 -o {shlex.quote(a.user)} -g {shlex.quote(a.group)} -- {shlex.quote(d)}",
                 sudo=True, timeout=30)


def _check_ports(host: Host, settings: Settings, names) -> None:
    """Raise naming the port and its holder when a port ``names`` need is taken."""
    listening = parse_ss(host.run(["ss", "-ltnpH"], sudo=True, timeout=30).stdout)
    for name in names:
        for key, port in listen_ports(settings, name).items():
            holders = [r for r in listening if r["port"] == port]
            if holders:
                who = ", ".join(f"{r['process']} (pid {r['pid']}) on {r['address']}" for r in holders)
                raise StepError(f"Port {port} (ports.{key}, needed by {name}) is in use by {who}. "
                                f"Stop that process or change ports.{key} in the settings; nothing was started.")


def _failure_report(host: Host, settings: Settings, name: str) -> str:
    parts = [f"--- {p} ---\n{t}" for p in (out_path(settings, name), log_path(settings, name)) if (t := _tail(host, p))]
    return "\n".join(parts) or "(no log written)"


def start(host: Host, settings: Settings, names=NAMES) -> list[str]:
    """Start the Envoys that are not running; leave running and ready ones alone.

    Validates first; fails before starting anything when a port is taken.
    Waits up to ``READY_TIMEOUT_S`` for each ``/ready`` to say LIVE.

    names: which Envoys (default all three).
    Returns the names that were started.

    Example: ``start(host, s)`` -> ``["sidecar", "igw", "igw_http"]`` (then ``[]``).
    """
    names = _names(names)
    todo = []
    for name in names:
        running = pids(host, settings, name)
        if running and _ready(host, settings, name):
            continue
        if running:
            # Started but not ready (still starting, or stuck): wait below instead of starting twice.
            todo.append((name, False))
        else:
            todo.append((name, True))
    if not todo:
        return []
    for name, _ in todo:
        validate(host, settings, name)
    _check_ports(host, settings, [n for n, launch in todo if launch])
    for name, launch in todo:
        if launch:
            _clean_shm(host, settings, name)
            host.run(launch_script(settings, name), user=settings.envoy.user, timeout=30)
    for name, _ in todo:
        r = host.run(wait_ready_script(settings, name), user=settings.envoy.user, check=False, timeout=READY_TIMEOUT_S + 15)
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
    for name in _names(names):
        found = pids(host, settings, name)
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
                raise StepError(f"Envoy {name} (PID {ids}) survived SIGKILL; check 'ps -o pid,stat,cmd -p {ids}' on {host.name}.")
        host.run(["rm", "-f", "--", pid_path(settings, name)], sudo=True, timeout=30)
        # Not strict: a stranger's Envoy on the same base-id is start()'s problem, not a failed stop.
        _clean_shm(host, settings, name, strict=False)
    return stopped


def admin(host: Host, settings: Settings, name: str, path: str) -> str:
    """GET an admin endpoint of ``name`` on the target (curl to 127.0.0.1 as the envoy user).

    path: e.g. ``/ready``, ``/stats?filter=rbac``, ``/clusters``, ``/listeners``.

    Example: ``print(admin(host, s, "igw", "/stats?filter=rbac"))``.
    """
    if not path.startswith("/"):
        path = "/" + path
    url = f"http://127.0.0.1:{admin_port(settings, name)}{path}"
    try:
        return host.run(["curl", "-sS", "--max-time", "10", url], user=settings.envoy.user, timeout=30).stdout
    except CommandError as e:
        raise StepError(f"The admin interface of {name} ({url}) did not answer: {e.result.tail(2, 'stderr')}. Is it running? See status().") from None


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
        return host.get(path, sudo=True)
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
        raise StepError(f"{settings.paths.envoy} --version failed (exit {r.exit_code}): {r.tail(3, 'stderr') or r.tail(3)}. Is Envoy installed (provision)?")
    return parse_version(r.stdout + r.stderr)


def status(host: Host, settings: Settings):
    """One row per Envoy: name, pid, running, ready, admin_port, listeners, log_tail (when dead).

    Example: ``status(host, s)[["name", "running", "ready"]]``.
    """
    import pandas as pd

    rows = []
    for name in NAMES:
        found = pids(host, settings, name)
        ready = bool(found) and _ready(host, settings, name)
        listeners = ""
        if ready:
            listeners = ", ".join(parse_listeners(admin(host, settings, name, "/listeners")))
        rows.append({
            "name": name,
            "pid": found[0] if found else None,
            "running": bool(found),
            "ready": ready,
            "admin_port": admin_port(settings, name),
            "listeners": listeners,
            "log_tail": "" if found else _failure_report(host, settings, name),
        })
    return pd.DataFrame(rows, columns=["name", "pid", "running", "ready", "admin_port", "listeners", "log_tail"]).astype({"pid": "Int64"})
