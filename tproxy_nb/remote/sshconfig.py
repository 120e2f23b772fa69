"""Where and how to connect, resolved the way OpenSSH's ``ssh`` reads ``~/.ssh/config``.

Pure: parses text and paths, opens no socket and talks to no agent (``host.py`` does that).
Honoured: HostName, User, Port, IdentityFile (several, ``~`` expanded), IdentitiesOnly,
ProxyJump (one or more hops, each resolved through the config itself), ProxyCommand
(``%h %p %r`` expanded) and UserKnownHostsFile. What the command line gives (``user@``,
``:port``, ``--key``, ``--known-hosts``) wins over the file, as with ``ssh``.

Example::

    r = resolve("web", config=load_config("~/.ssh/config"))
    r.hostname, r.port, r.user, [hop.hostname for hop in r.jumps()]
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from ..errors import ConnectError

#: Keys OpenSSH tries when neither the command line nor the config names one (paramiko reads these types).
DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
#: OpenSSH's default UserKnownHostsFile and GlobalKnownHostsFile.
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
#: Names the ssh_config to read instead of ~/.ssh/config (how ``tproxy-nb run --ssh-config`` reaches notebooks).
SSH_CONFIG_ENV_VAR = "TPROXY_NB_SSH_CONFIG"
#: A chain of jump hosts longer than this is a loop in the config.
MAX_HOPS = 8

_TARGET_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^:@\s\[\]]+)(?::(?P<port>\d{1,5}))?$")


def parse_target(target: str) -> tuple[str | None, str, int | None]:
    """Split ``user@host[:port]`` (or an ssh_config alias) into its parts.

    Example: ``parse_target("admin@198.18.0.2:2222")`` -> ``("admin", "198.18.0.2", 2222)``.
    """
    m = _TARGET_RE.match(target.strip())
    if not m:
        raise ConnectError(
            f"Cannot read the target {target!r}. Write it as user@host or user@host:port "
            "(for example admin@203.0.113.10:22), a Host alias from ~/.ssh/config, or 'lab' for the local lab."
        )
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ConnectError(f"The port in target {target!r} is out of range (1-65535).")
    return m["user"], m["host"].strip("[]"), port


@dataclass(frozen=True)
class Resolved:
    """One SSH destination with everything needed to reach it.

    alias: the name as given (a config alias or the host itself).
    hostname, port, user: where to connect, as whom.
    identity_files: private keys to offer, in order (``--key`` first, then IdentityFile, else the defaults).
    identities_only: offer only those keys (agent keys only when they match one of them).
    known_hosts: files with pinned host keys (the first is the one to add a key to).
    jump: the host to tunnel through (ProxyJump), itself resolved; None to connect directly.
    proxy_command: a command whose stdin/stdout is the connection (ProxyCommand), tokens expanded.
    """

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...] = ()
    identities_only: bool = False
    known_hosts: tuple[Path, ...] = ()
    jump: Resolved | None = None
    proxy_command: str | None = None
    via: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        """``user@host:port`` (how a Host prints itself)."""
        return f"{self.user}@{self.hostname}:{self.port}"

    def jumps(self) -> list[Resolved]:
        """The jump hosts in the order they are connected to (first hop first)."""
        hops: list[Resolved] = []
        hop = self.jump
        while hop is not None:
            hops.insert(0, hop)
            hop = hop.jump
        return hops


def load_config(path: str | os.PathLike | None = None, text: str | None = None) -> paramiko.SSHConfig:
    """Parse an ssh_config: ``text`` if given, else ``path`` (default: ``$TPROXY_NB_SSH_CONFIG``, else
    ``~/.ssh/config``; a missing default file is an empty config, a missing named one an error).

    Example: ``load_config(text="Host web\\n  HostName 203.0.113.10\\n").lookup("web")["hostname"]``.
    """
    if text is not None:
        return paramiko.SSHConfig.from_text(text)
    path = path or os.environ.get(SSH_CONFIG_ENV_VAR) or None
    cfg_path = Path(path or "~/.ssh/config").expanduser()
    if not cfg_path.is_file():
        if path is not None:
            raise ConnectError(f"The SSH config {cfg_path} does not exist. Name an existing file or leave it out.")
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(cfg_path))
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise ConnectError(f"Cannot read the SSH config {cfg_path}: {e}. Fix or move it.") from None


def resolve(
    host: str,
    *,
    user: str | None = None,
    port: int | None = None,
    config: paramiko.SSHConfig | None = None,
    key_file: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    local_user: str | None = None,
    _depth: int = 0,
) -> Resolved:
    """Resolve a host name or ssh_config alias as ``ssh`` would; what the command line gives wins.

    host: a name, address or ``Host`` alias (no ``user@`` or ``:port``: see :func:`parse_target`).
    user, port: from the command line (``user@host:port``); None: from the config, else defaults.
    config: a parsed ssh_config (None: no config at all).
    key_file: a key named on the command line (tried before IdentityFile).
    known_hosts: a known_hosts file named on the command line (replaces UserKnownHostsFile).
    local_user: the login name when neither the command line nor the config says (default: this process's user).

    Example: ``resolve("web", port=2222, config=load_config(text="Host web\\n User admin\\n")).name``
    -> ``"admin@web:2222"``.
    """
    if _depth > MAX_HOPS:
        raise ConnectError(
            f"ProxyJump for {host!r} goes through more than {MAX_HOPS} hosts; the SSH config has a loop."
        )
    alias = host
    opts = _lookup(config or paramiko.SSHConfig(), alias, user, port)
    me = local_user or _local_user()
    user = user or opts.get("user") or me
    port = port or _port(opts.get("port"), alias)
    files = [Path(key_file).expanduser()] if key_file else []
    files += [Path(f).expanduser() for f in opts.get("identityfile", [])]
    explicit = bool(files)
    if not explicit:
        files = [Path(f).expanduser() for f in DEFAULT_IDENTITIES]
    user_files = opts.get("userknownhostsfile", "").split() or list(DEFAULT_KNOWN_HOSTS)
    kh = tuple(Path(f).expanduser() for f in [*user_files, *GLOBAL_KNOWN_HOSTS])
    if known_hosts:
        # The file named on the command line replaces the config's for the target; a jump host may be
        # pinned in either (its key is checked just as strictly).
        kh = (Path(known_hosts).expanduser(), *(kh if _depth else ()))
    hostname = opts.get("hostname", alias)
    jump_spec = _none_or(opts.get("proxyjump"))
    command = _none_or(opts.get("proxycommand"))
    if jump_spec and command:
        raise ConnectError(
            f"The SSH config sets both ProxyJump and ProxyCommand for {alias}; ssh uses whichever comes first "
            "in the file, which tproxy-nb cannot tell. Keep one of them for this host."
        )
    jump = None
    if jump_spec:
        jump = _resolve_jumps(jump_spec, config, known_hosts, me, _depth)
    return Resolved(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(dict.fromkeys(files)),
        identities_only=opts.get("identitiesonly", "no").lower() == "yes",
        known_hosts=kh,
        jump=jump,
        proxy_command=command,
        via=("ProxyJump " + jump_spec) if jump_spec else ("ProxyCommand " + command) if command else "",
    )


def _lookup(config: paramiko.SSHConfig, alias: str, user: str | None, port: int | None) -> dict:
    """``config.lookup(alias)`` with the command line's user and port set first.

    ssh sets command-line options before reading the file and keeps the first value obtained, so
    ``%r`` and ``%p`` in ProxyCommand mean the command line's user and port; paramiko's public lookup
    cannot be told them, so this seeds its (stable since 2.7) inner lookup the same way.
    """
    if user is None and port is None:
        return config.lookup(alias)
    seed = paramiko.SSHConfigDict()
    if user is not None:
        seed["user"] = user
    if port is not None:
        seed["port"] = str(port)
    options = config._lookup(alias, seed)  # type: ignore[attr-defined]
    options.setdefault("hostname", alias)
    return config._lookup(alias, options, canonical=False, final=True)  # type: ignore[attr-defined]


def _resolve_jumps(
    spec: str, config: paramiko.SSHConfig | None, known_hosts: str | os.PathLike | None, me: str, depth: int
) -> Resolved:
    """``ProxyJump a,b``: reach ``b`` through ``a``; ``a`` follows its own config (it may jump too)."""
    hops = [h.strip() for h in spec.split(",") if h.strip()]
    hop: Resolved | None = None
    for i, text in enumerate(hops):
        text = re.sub(r"^ssh://", "", text)
        user, name, port = parse_target(text)
        r = resolve(name, user=user, port=port, config=config, known_hosts=known_hosts, local_user=me, _depth=depth + 1)
        if i > 0:
            # A later hop is reached through the one before it, whatever its own config says (as ssh -J does).
            r = replace(r, jump=hop, proxy_command=None)
        hop = r
    if hop is None:
        raise ConnectError(f"ProxyJump {spec!r} names no host; write it as [user@]host[:port][,...].")
    return hop


def _port(value: str | None, alias: str) -> int:
    if value is None:
        return 22
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ConnectError(f"The SSH config gives Port {value!r} for {alias}; use a number from 1 to 65535.")
    return port


def _none_or(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() == "none" else value.strip()


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "root"
