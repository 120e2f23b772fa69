"""The three Envoys on paper: their configs, command lines, file paths and the parsers of what they print.

``sidecar`` takes the app's redirected connections and tunnels them over mTLS
to the gateways ``igw`` (TLS via HTTP CONNECT) and ``igw_http`` (plain HTTP),
which apply the RBAC allowlist and forward to the internet. Configs are the
commented templates in ``templates/<name>.yaml`` (package data) filled from the settings.

Every Envoy runs as the envoy user with its own ``--base-id`` (hot-restart
shared memory ``/dev/shm/envoy_shared_memory_<10*base-id>``), debug log
``<paths.log>/<name>.log``, JSON access log ``<paths.log>/<name>.access.log``,
PID in ``<paths.run>/<name>.pid``.

Pure: nothing here touches a host; :mod:`tproxy_nb.steps.envoy_proc` runs them.

Example::

    print(render(settings, "igw"))
    command(settings, "igw")
"""

from __future__ import annotations

import re
import shlex
import string
from importlib import resources

import yaml

from ..errors import StepError
from ..marks import SHM_DIR, shm_name
from ..settings import LOG_LEVELS, Settings
from . import certs

NAMES: tuple[str, ...] = ("sidecar", "igw", "igw_http")
#: How often Envoy writes its buffered debug and access logs to their files.
FLUSH_INTERVAL_MS = 200
#: Loggers that start no chattier than ``info`` whatever ``log_level`` says, as on a production Envoy, and are
#: turned up at runtime when needed (admin ``POST /logging?rbac=debug``; see ``envoy_proc.set_log_level``).
#: The rest stay at ``log_level``: tracing a request needs the connection, stream and codec lines.
RUNTIME_LOGGERS = ("rbac",)
#: The commented templates a learner reads (package data: tproxy_nb/render/templates/<name>.yaml).
TEMPLATES = resources.files(__package__) / "templates"
#: Seconds to wait for an Envoy's /ready to say LIVE, and for it to exit on SIGTERM.
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10

#: Which fragments (``templates/tls_deny/<file>.yaml``) each ``tls_deny`` mode puts where in the sidecar
#: template: filter chains of its own, a filter in front of tcp_proxy, fields of tcp_proxy. reset adds nothing;
#: sni builds on read-first, because tcp_proxy stops reading until its tunnel is up: without it the RBAC
#: filter would see the ClientHello only after the gateway's 403.
TLS_DENY_FRAGMENTS: dict[str, dict[str, str]] = {
    "reset": {},
    "read-first": {"tls_deny_tcp_proxy": "read-first"},
    "sni": {"tls_deny_filters": "sni", "tls_deny_tcp_proxy": "read-first"},
    "deny-page": {"tls_deny_chains": "deny-page"},
}
#: Which fragments (``templates/tunnel/<file>.yaml``) each ``tunnel`` mode puts into the sidecar's igw cluster:
#: its protocol options (at the cluster's top) and the ALPN it offers (in its TLS context).
TUNNEL_FRAGMENTS: dict[str, dict[str, str]] = {
    "http1": {"tunnel_protocol": "http1"},
    "http2": {"tunnel_protocol": "http2", "tunnel_alpn": "http2-alpn"},
}
#: Every insertion point of the sidecar template, by setting: (its fragments per mode, their folder).
_SIDECAR_SLOTS = (
    ("tls_deny", TLS_DENY_FRAGMENTS, ("tls_deny_chains", "tls_deny_filters", "tls_deny_tcp_proxy")),
    ("tunnel", TUNNEL_FRAGMENTS, ("tunnel_protocol", "tunnel_alpn")),
)


#: The access log's ``json_format``: key -> Envoy command operator. The config
#: templates render exactly this; :func:`parse_access_log` reads it back.
ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "connection_id": "%CONNECTION_ID%",
    "upstream_connection_id": "%UPSTREAM_CONNECTION_ID%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "upstream_host": "%UPSTREAM_HOST%",
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    # Why the upstream connection failed; Envoy 1.40 writes the gateway's refusal of a CONNECT here
    # ("tunnel_response:403"), which the sidecar otherwise logs only as the flag UF.
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    # Why Envoy itself closed the app's connection, when it did.
    "downstream_local_close_reason": "%DOWNSTREAM_LOCAL_CLOSE_REASON%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}


# --------------------------------------------------------------------------- pure: names and paths


def check_name(name: str) -> str:
    if name not in NAMES:
        raise StepError(f"Unknown Envoy {name!r}; the chain has {', '.join(NAMES)}.")
    return name


def config_path(settings: Settings, name: str) -> str:
    """Where the rendered config of ``name`` lives on the target.

    Example: ``config_path(s, "igw")`` -> ``"/opt/tproxy-nb/etc/igw.yaml"``.
    """
    return f"{settings.paths.etc}/{check_name(name)}.yaml"


def log_path(settings: Settings, name: str, access: bool = False) -> str:
    """The debug log (or, with ``access``, the JSON access log) of ``name`` on the target.

    Example: ``log_path(s, "sidecar", access=True)`` -> ``"/opt/tproxy-nb/log/sidecar.access.log"``.
    """
    return f"{settings.paths.log}/{check_name(name)}{'.access' if access else ''}.log"


def out_path(settings: Settings, name: str) -> str:
    """Stdout/stderr of the process: errors printed before ``--log-path`` is open land here."""
    return f"{settings.paths.log}/{check_name(name)}.out"


def pid_path(settings: Settings, name: str) -> str:
    """The file holding the PID of the running Envoy ``name``."""
    return f"{settings.paths.run}/{check_name(name)}.pid"


def shm_path(settings: Settings, name: str) -> str:
    """Hot-restart shared memory Envoy leaves behind (measured with 1.40: 10 x base-id).

    Example: ``shm_path(s, "sidecar")`` -> ``"/dev/shm/envoy_shared_memory_110"``.
    """
    return f"{SHM_DIR}/{shm_name(settings.base_ids[check_name(name)])}"


def admin_port(settings: Settings, name: str) -> int:
    """The admin port of ``name`` (on 127.0.0.1 of the target)."""
    return getattr(settings.ports, f"admin_{check_name(name)}")


def listen_ports(settings: Settings, name: str) -> dict[str, int]:
    """Every TCP port ``name`` binds, by settings key.

    Example: ``listen_ports(s, "igw")`` -> ``{"igw": 12010, "admin_igw": 9902}``.
    """
    p = settings.ports
    own = {
        "sidecar": {
            "http_redirect": p.http_redirect,
            "tls_redirect": p.tls_redirect,
            "explicit_proxy": p.explicit_proxy,
        },
        "igw": {"igw": p.igw},
        "igw_http": {"igw_http": p.igw_http},
    }[check_name(name)]
    return {**own, f"admin_{name}": admin_port(settings, name)}


def command(settings: Settings, name: str) -> list[str]:
    """The Envoy command line for ``name`` (argument list; the order is relied on to find the process).

    Example: ``command(s, "igw")[:3]`` -> ``["/opt/tproxy-nb/bin/envoy", "-c", "/opt/tproxy-nb/etc/igw.yaml"]``.
    """
    return [
        settings.paths.envoy,
        "-c",
        config_path(settings, name),
        "--base-id",
        str(settings.base_ids[name]),
        "-l",
        settings.log_level,
        *start_levels(settings),
        "--log-path",
        log_path(settings, name),
        # Envoy buffers log files for 10 s by default; a reader right after a request would see nothing.
        "--file-flush-interval-msec",
        str(FLUSH_INTERVAL_MS),
    ]


def start_levels(settings: Settings) -> list[str]:
    """The ``--component-log-level`` switch that starts :data:`RUNTIME_LOGGERS` at ``info`` (or quieter).

    Nothing when ``log_level`` is already ``info`` or quieter.

    Example: ``start_levels(s)`` -> ``["--component-log-level", "rbac:info"]`` (``log_level: debug``).
    """
    if LOG_LEVELS.index(settings.log_level) >= LOG_LEVELS.index("info"):
        return []
    return ["--component-log-level", ",".join(f"{logger}:info" for logger in RUNTIME_LOGGERS)]


def validate_command(settings: Settings, name: str, envoy_path: str | None = None) -> list[str]:
    """``envoy --mode validate`` for ``name``'s config (no listeners opened, cert files read).

    envoy_path: binary to use instead of ``settings.paths.envoy`` (a local check).

    Example: ``validate_command(s, "igw")``
    -> ``[".../envoy", "--mode", "validate", "-c", ".../igw.yaml", "-l", "error"]``.
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
            "permissions": [
                {"header": {"name": ":authority", "string_match": {"safe_regex": {"regex": authority_regex(host)}}}}
            ],
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
        "explicit_proxy_port": p.explicit_proxy,
        "tls_deny": settings.tls_deny,
        "tunnel": settings.tunnel,
        "transparent": "true" if settings.interception == "tproxy" else "false",
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


def fill_blocks(template: str, blocks: dict[str, str], escape: bool = True) -> str:
    """Replace each line that holds only ``${name}`` by ``blocks[name]``, indented like that line.

    escape: double ``$`` in a block so the following string.Template pass leaves it alone (False for
    template fragments whose placeholders that pass must fill).

    Example: ``fill_blocks("a:\\n  ${b}\\n", {"b": "x: 1\\ny: 2"})`` -> ``"a:\\n  x: 1\\n  y: 2\\n"``
    (before the ``$`` unescaping done by string.Template).
    """
    for key, text in blocks.items():
        pattern = re.compile(r"^([ \t]*)\$\{" + re.escape(key) + r"\}[ \t]*$", re.M)

        def indent(m: re.Match, text=text) -> str:
            body = text.replace("$", "$$") if escape else text
            return "\n".join(m[1] + line if line else line for line in body.splitlines())

        template = pattern.sub(indent, template)
    return template


def sni_policies(allowed_hosts) -> dict:
    """Network RBAC policies of ``tls_deny: sni``: one per allowed host, on the ClientHello's SNI.

    Example: ``sni_policies(["www.google.com"])["allow-www.google.com"]["permissions"]``
    -> ``[{"requested_server_name": {"exact": "www.google.com"}}]``.
    """
    return {
        f"allow-{host}": {"permissions": [{"requested_server_name": {"exact": host}}], "principals": [{"any": True}]}
        for host in allowed_hosts
    }


def denied_names(settings: Settings) -> list[str]:
    """The denied examples that really are denied (not also allowed): the names a deny page is made for.

    Example: ``denied_names(s)`` -> ``["www.lyft.com"]``.
    """
    return [n for n in settings.denied_examples if n not in settings.allowed_hosts]


def _fragment(path: str) -> str:
    return (TEMPLATES / path).read_text()


def sidecar_fragments(settings: Settings) -> dict[str, str]:
    """The sidecar template's insertions: the ``tls_deny`` and ``tunnel`` modes' fragments, the explicit proxy.

    Example: ``sidecar_fragments(s.replace(tls_deny="sni"))["tls_deny_filters"].splitlines()[0]``
    -> ``"# tls_deny: sni (in front of the tcp_proxy of the TLS chain, which reads"``.
    """
    out: dict[str, str] = {}
    for setting, fragments, slots in _SIDECAR_SLOTS:
        out.update(dict.fromkeys(slots, ""))
        for slot, fragment in fragments[getattr(settings, setting)].items():
            text = _fragment(f"{setting}/{fragment}.yaml")
            if fragment == "deny-page":
                # One filter chain (and certificate) per denied name.
                text = "\n".join(
                    string.Template(text).safe_substitute(deny_name=n, **certs.deny_paths(settings, n))
                    for n in denied_names(settings)
                )
            out[slot] = text
    out["explicit_proxy_listener"] = _fragment("explicit_proxy.yaml")
    return out


def render(settings: Settings, name: str) -> str:
    """The Envoy config of ``name`` as YAML text, from ``templates/<name>.yaml`` (package data) and the settings.

    settings: ports, paths, allowed hosts, ``tls_deny`` and ``tunnel`` (the sidecar only).
    name: ``sidecar``, ``igw`` or ``igw_http``.

    Example: ``yaml.safe_load(render(s, "igw"))["admin"]``.
    """
    template = (TEMPLATES / f"{check_name(name)}.yaml").read_text()
    if name == "sidecar":
        template = fill_blocks(template, sidecar_fragments(settings), escape=False)
    blocks = {
        "access_log_format": _block(ACCESS_LOG_FORMAT),
        "rbac_policies": _block(rbac_policies(settings.allowed_hosts)),
        "sni_policies": _block(sni_policies(settings.allowed_hosts)),
    }
    try:
        return string.Template(fill_blocks(template, blocks)).substitute(template_values(settings, name))
    except (KeyError, ValueError) as e:
        raise StepError(f"templates/{name}.yaml has a placeholder render() does not fill: {e}.") from None


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
    rows: list[dict] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].startswith("LISTEN"):
            continue
        address, _, port = parts[3].rpartition(":")
        if not port.isdigit():
            continue
        users = _SS_USERS_RE.findall(line) or [("?", "0")]
        rows.extend(
            {"address": address, "port": int(port), "process": proc, "pid": int(pid) or None} for proc, pid in users
        )
    return rows


def parse_listeners(text: str) -> list[str]:
    """Addresses from the admin ``/listeners`` text (``name::address`` per line).

    Example: ``parse_listeners("igw::127.0.0.1:12010\\n")`` -> ``["127.0.0.1:12010"]``.
    """
    return [line.split("::", 1)[1] for line in text.splitlines() if "::" in line]


def parse_loggers(text: str) -> dict[str, str]:
    """Each logger's level from the admin ``/logging`` answer (``active loggers:`` then ``  name: level`` lines).

    Example: ``parse_loggers("active loggers:\\n  admin: info\\n  rbac: debug\\n")``
    -> ``{"admin": "info", "rbac": "debug"}``.
    """
    return dict(re.findall(r"(?m)^\s+([a-z][a-z0-9_]*): ([a-z]+)\s*$", text))


def parse_counters(text: str) -> dict[str, int]:
    """Integer counters of an admin page: ``name: 5`` lines of ``/stats``, ``c::host::stat::5`` of ``/clusters``.

    Other lines (histograms, health flags, addresses) are left out.

    Example: ``parse_counters("http.igw.rbac.denied: 5\\nigw::127.0.0.1:12010::cx_total::3")``
    -> ``{"http.igw.rbac.denied": 5, "igw::127.0.0.1:12010::cx_total": 3}``.
    """
    found: dict[str, int] = {}
    for line in text.splitlines():
        if "::" in line:
            name, _, value = line.strip().rpartition("::")
        else:
            name, _, value = line.strip().partition(": ")
        if name and value.isdigit():
            found[name] = int(value)
    return found


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
        f'[ "$(curl -s --max-time 1 {q(url)})" = LIVE ] && exit 0; '
        f'[ -s {pid} ] && ! kill -0 "$(cat {pid})" 2>/dev/null && exit 3; '
        f"sleep 0.25; done; exit 2"
    )
