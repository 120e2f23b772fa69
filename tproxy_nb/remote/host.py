"""An SSH target: run commands and move files over one reused paramiko connection.

The only module that imports paramiko. Everything the tutorial does on a host
(the local lab or an EC2 instance) goes through :class:`Host`.

Example::

    with Host.from_target("admin@198.18.0.2", key_file="~/.ssh/id_ed25519") as h:
        print(h.run("id -un").stdout)
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import secrets
import select
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import paramiko

from ..errors import CommandError, CommandTimeout, ConnectError, HostKeyError, TproxyError
from . import sshconfig
from .keys import KeySources, Passphrase, agent_keys, locked_key_error
from .sshconfig import Resolved
from .sshconfig import parse_target as parse_target

log = logging.getLogger(__name__)

#: Files at least this big get a progress bar when transferred.
PROGRESS_MIN_BYTES = 4 * 1024 * 1024
#: Grace the remote ``timeout`` gets to kill a command before we give up locally.
_KILL_GRACE_S = 3


# --------------------------------------------------------------------------- commands

Command = str | Sequence[str]


def to_shell(cmd: Command) -> str:
    """Return ``cmd`` as one shell string; a sequence is quoted word by word.

    cmd: a shell string (used as is) or a list of arguments (each quoted).

    Example: ``to_shell(["echo", "a b"])`` -> ``"echo 'a b'"``.
    """
    if isinstance(cmd, str):
        return cmd
    return shlex.join(str(part) for part in cmd)


def build_command(cmd: Command, *, sudo: bool = False, user: str | None = None, timeout: float | None = None) -> str:
    """Wrap a command for sudo / another user / a remote time limit.

    cmd: shell string or argument list.
    sudo: run as root through ``sudo -n`` (never prompts: fails fast without sudo rights).
    user: run as this user through ``sudo -n -u USER`` (implies sudo).
    timeout: seconds; the remote ``timeout`` kills the command after that.

    Example: ``build_command("id -u", user="svc")`` ->
    ``"sudo -n -H -u svc -- sh -c 'id -u'"``.
    """
    shell = to_shell(cmd)
    if user is not None:
        shell = f"sudo -n -H -u {shlex.quote(user)} -- sh -c {shlex.quote(shell)}"
    elif sudo:
        shell = f"sudo -n -- sh -c {shlex.quote(shell)}"
    if timeout is not None:
        # The remote side enforces the limit so nothing keeps running after we give up.
        shell = f"timeout -k {_KILL_GRACE_S} {timeout:g} sh -c {shlex.quote(shell)}"
    return shell


_SECRET_RE = re.compile(r"(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?(-----END [A-Z ]*PRIVATE KEY-----)", re.S)


def mask_secrets(text: str) -> str:
    """Replace private-key blocks in ``text`` so a command can be printed safely."""
    return _SECRET_RE.sub(r"\1 ***masked*** \2", text)


@dataclass(frozen=True)
class Result:
    """What one remote command did.

    cmd: the command as the caller gave it (before sudo/timeout wrapping).
    exit_code: the remote exit status.
    stdout, stderr: decoded output (UTF-8, undecodable bytes replaced).
    duration: seconds from start to exit.
    host: where it ran, as ``user@host:port``.
    """

    cmd: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    host: str = ""
    wrapped: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0

    @property
    def display_cmd(self) -> str:
        """The command with any private-key material masked."""
        return mask_secrets(self.cmd)

    def tail(self, n: int = 10, stream: str = "stdout") -> str:
        """Last ``n`` lines of ``stream`` ("stdout" or "stderr")."""
        text = self.stdout if stream == "stdout" else self.stderr
        return "\n".join(text.rstrip("\n").splitlines()[-n:])

    def __repr__(self) -> str:
        cmd = self.display_cmd
        cmd = cmd if len(cmd) <= 60 else cmd[:57] + "..."
        return f"<Result exit={self.exit_code} {self.duration:.3f}s {cmd!r}>"


# --------------------------------------------------------------------------- targets


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key: ``SHA256:...``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_host_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """Refuse hosts not in known_hosts, naming the key so it can be checked and accepted."""

    def __init__(self, known_hosts: Path | None, alias: str = "", proxied: bool = False):
        self.known_hosts = known_hosts
        self.alias = alias
        self.proxied = proxied

    def missing_host_key(self, client, hostname, key):
        fp = fingerprint(key)
        where = str(self.known_hosts) if self.known_hosts else "~/.ssh/known_hosts"
        host, port = _split_known_name(hostname)
        if self.proxied:
            # Reached through a jump host or a proxy command: only ssh itself can fetch the key the same way.
            accept = (
                f"run 'ssh -o UserKnownHostsFile={where} {self.alias or host} true' once, compare the fingerprint "
                "it shows, and answer yes"
            )
        else:
            accept = (
                f"tproxy_nb.remote.host.trust_host_key({host!r}, {port}, {fp!r}, known_hosts={where!r}) "
                f"or 'ssh-keyscan -p {port} {host} >> {where}'"
            )
        raise HostKeyError(
            f"The host key of {hostname} is not known ({key.get_name()} {fp}); refusing to connect. "
            f"Check this fingerprint against the host (for EC2: the instance's console output, or "
            f"'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' on it), then accept it deliberately with {accept}.",
            hostname=host,
            port=port,
            key_type=key.get_name(),
            fingerprint=fp,
            public_key=f"{key.get_name()} {key.get_base64()}",
        )


def _split_known_name(name: str) -> tuple[str, int]:
    m = re.match(r"^\[(.+)\]:(\d+)$", name)
    return (m[1], int(m[2])) if m else (name, 22)


def fetch_host_key(hostname: str, port: int = 22, timeout: float = 10) -> paramiko.PKey:
    """Read a server's host key without authenticating (to show or pin its fingerprint)."""
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except OSError as e:
        raise ConnectError(f"Cannot reach {hostname}:{port} to read its host key: {e}.") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.SSHException as e:
        raise ConnectError(f"{hostname}:{port} did not speak SSH: {e}.") from None
    finally:
        transport.close()


def trust_host_key(
    hostname: str, port: int, expected_fingerprint: str, known_hosts: str | os.PathLike | None = None
) -> str:
    """Add a host's key to known_hosts after checking it has the fingerprint you expect.

    hostname, port: the SSH server.
    expected_fingerprint: ``SHA256:...`` as read from the host by a trusted path.
    known_hosts: file to append to (default ``~/.ssh/known_hosts``).

    Example: ``trust_host_key("203.0.113.10", 22, "SHA256:abc...")``.
    """
    key = fetch_host_key(hostname, port)
    fp = fingerprint(key)
    if fp != expected_fingerprint.strip():
        raise HostKeyError(
            f"{hostname}:{port} presents {key.get_name()} {fp}, not {expected_fingerprint}; nothing was added. "
            "Someone may be in the middle, or you copied the fingerprint of another host.",
            hostname=hostname,
            port=port,
            key_type=key.get_name(),
            fingerprint=fp,
            public_key=f"{key.get_name()} {key.get_base64()}",
        )
    path = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as f:
        f.write(f"{_known_host_name(hostname, port)} {key.get_name()} {key.get_base64()}\n")
    return fp


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand whose close() may run twice (paramiko's transport thread closes it too)."""

    def close(self) -> None:
        try:
            os.kill(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # already stopped and reaped


# --------------------------------------------------------------------------- Host


class Host:
    """One SSH target, connected lazily, one connection reused, reached the way ``ssh`` reaches it.

    hostname: name, address or an ``~/.ssh/config`` alias.
    user: login user (default: from ssh config, else the local user).
    port: SSH port (default: from ssh config, else 22).
    key_file: private key to log in with, offered before IdentityFile keys and ssh-agent's.
    passphrase: the key's passphrase (a string or a :class:`~tproxy_nb.remote.keys.Passphrase`);
        default: none, asked for on a terminal.
    known_hosts: file with the pinned host key; default: UserKnownHostsFile, else ``~/.ssh/known_hosts``.
    ssh_config: the ssh_config to read (default ``~/.ssh/config``; False: none).

    Example::

        h = Host("198.18.0.2", user="tpx-admin", key_file="lab/id_ed25519")
        h.run(["id", "-u"], user="tpx-svc").stdout
    """

    #: Connecting (TCP, SSH handshake) is retried this many times in all; nothing else is retried.
    connect_attempts = 3

    def __init__(
        self,
        hostname: str,
        user: str | None = None,
        port: int | None = None,
        key_file: str | os.PathLike | None = None,
        passphrase: str | Passphrase | None = None,
        known_hosts: str | os.PathLike | None = None,
        connect_timeout: float = 10,
        ssh_config: str | os.PathLike | Literal[False] | None = None,
    ):
        config = None if ssh_config is False else sshconfig.load_config(ssh_config)
        resolved = sshconfig.resolve(
            hostname, user=user, port=port, config=config, key_file=key_file, known_hosts=known_hosts
        )
        if key_file is not None and not resolved.identity_files[0].is_file():
            raise ConnectError(
                f"The key file {resolved.identity_files[0]} does not exist. Pass key_file= (or --key) with the "
                f"private key that logs in as {resolved.user} on {resolved.hostname}."
            )
        self._setup(resolved, passphrase, connect_timeout)
        self.known_hosts: Path | None = Path(known_hosts).expanduser() if known_hosts else None

    def _setup(self, resolved: Resolved, passphrase: str | Passphrase | None, connect_timeout: float) -> None:
        self.resolved = resolved
        self.alias = resolved.alias
        self.hostname = resolved.hostname
        self.user = resolved.user
        self.port = resolved.port
        self.key_file = resolved.identity_files[0] if resolved.identity_files else None
        if isinstance(passphrase, Passphrase):
            self.passphrase = passphrase
        elif passphrase is not None:
            self.passphrase = Passphrase(passphrase, "passphrase=")
        else:
            self.passphrase = Passphrase.from_env(None)
        self.known_hosts = None
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._jump: Host | None = None
        self._proxy: paramiko.ProxyCommand | None = None
        self._agent: paramiko.Agent | None = None

    @classmethod
    def from_resolved(
        cls, resolved: Resolved, passphrase: str | Passphrase | None = None, connect_timeout: float = 10
    ) -> Host:
        """A Host for an already resolved target (a jump host, or a fresh copy of a Host)."""
        host = cls.__new__(cls)
        host._setup(resolved, passphrase, connect_timeout)
        return host

    @classmethod
    def from_target(cls, target: str, key_file: str | os.PathLike | None = None, **kw) -> Host:
        """Build a Host from ``user@host[:port]`` or an ssh_config alias (``user@`` and ``:port`` win over it)."""
        user, host, port = parse_target(target)
        return cls(host, user=user, port=port, key_file=key_file, **kw)

    def fresh(self, connect_timeout: float | None = None) -> Host:
        """A new, unconnected Host for the same target, reached the same way (the same jump hosts, keys).

        Example: ``with host.fresh(5) as h: h.run("true")`` proves a new connection still gets in.
        """
        copy = Host.from_resolved(self.resolved, self.passphrase, connect_timeout or self.connect_timeout)
        copy.known_hosts = self.known_hosts
        return copy

    @property
    def name(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def __repr__(self) -> str:
        return f"<Host {self.name}>"

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- connection

    def _host_keys(self, client: paramiko.SSHClient) -> None:
        for path in self.resolved.known_hosts:
            if path.is_file():
                try:
                    # "System" keys are only read, never written back: we add no key silently.
                    client.load_system_host_keys(str(path))
                except (OSError, paramiko.SSHException) as e:
                    raise ConnectError(f"Cannot read the known_hosts file {path}: {e}. Fix or move it.") from None
        first = self.resolved.known_hosts[0] if self.resolved.known_hosts else None
        proxied = self.resolved.jump is not None or self.resolved.proxy_command is not None
        client.set_missing_host_key_policy(_RefuseUnknownKey(first, self.alias, proxied))

    def _socket(self):
        """The connection to hand paramiko: a channel through the jump host, a proxy command, or None (direct)."""
        r = self.resolved
        if r.jump is not None:
            if self._jump is None:
                self._jump = Host.from_resolved(r.jump, self.passphrase, self.connect_timeout)
            transport = self._jump.connect().get_transport()
            if transport is None:
                raise paramiko.SSHException(f"the connection to the jump host {self._jump.name} closed")
            # Raises ChannelException (retried) when the jump host cannot reach the target (yet).
            return transport.open_channel(
                "direct-tcpip", (r.hostname, r.port), ("127.0.0.1", 0), timeout=self.connect_timeout
            )
        if r.proxy_command is not None:
            self._stop_proxy()
            self._proxy = _ProxyCommand(r.proxy_command)
            return self._proxy
        return None

    def connect(self) -> paramiko.SSHClient:
        """Open the connection if it is not open; reconnects after a drop.

        Only connecting is retried (``connect_attempts`` times in all, each retry said on stderr);
        an unknown or changed host key, or a refused key, fails at once.
        """
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        agent, self._agent, agent_note = agent_keys()
        keys = KeySources(self.resolved, self.passphrase, agent)
        keys.precheck()
        last: Exception | None = None
        for attempt in range(1, self.connect_attempts + 1):
            client = paramiko.SSHClient()
            self._host_keys(client)
            try:
                client.connect(
                    self.hostname,
                    port=self.port,
                    username=self.user,
                    sock=self._socket(),
                    timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout,
                    auth_timeout=self.connect_timeout,
                    allow_agent=False,
                    look_for_keys=False,
                    auth_strategy=keys,
                )
                self._client = client
                return client
            except TproxyError:
                # An unknown or changed host key, here or on a jump host, or a jump host that refused us.
                client.close()
                self.close()
                raise
            except paramiko.BadHostKeyException as e:
                client.close()
                self.close()
                raise self._changed_key(e) from None
            except paramiko.AuthenticationException:
                client.close()
                self.close()
                raise self._refused(keys, agent_note) from None
            except (OSError, paramiko.SSHException, EOFError) as e:
                client.close()
                self._stop_proxy()
                last = e
                if attempt < self.connect_attempts:
                    log.warning(
                        "tproxy-nb: connecting to %s failed (%s: %s); retrying (attempt %d of %d)",
                        self.name,
                        e.__class__.__name__,
                        e,
                        attempt + 1,
                        self.connect_attempts,
                    )
                    time.sleep(0.5 * attempt)
        self.close()
        via = f" through {self.resolved.via}" if self.resolved.via else ""
        raise ConnectError(
            f"Cannot connect to {self.hostname}:{self.port}{via} ({last.__class__.__name__}: {last}) after "
            f"{self.connect_attempts} attempts. Check that the host is up, that sshd listens on port {self.port}, "
            "and that no firewall or security group blocks it"
            + ("; that the jump host can reach it and allows TCP forwarding" if self.resolved.jump else "")
            + ("; that the proxy command works on its own" if self.resolved.proxy_command else "")
            + ". For the local lab, run 'tproxy-nb lab up'."
        )

    def _changed_key(self, e: paramiko.BadHostKeyException) -> HostKeyError:
        fp = fingerprint(e.key)
        where = self.resolved.known_hosts[0] if self.resolved.known_hosts else "~/.ssh/known_hosts"
        return HostKeyError(
            f"The host key of {self.hostname}:{self.port} has CHANGED: "
            f"it now presents {e.key.get_name()} {fp}, known_hosts expects {fingerprint(e.expected_key)}. "
            "Refusing to connect. If the host was rebuilt, remove the old line with "
            f"'ssh-keygen -f {where} -R {_known_host_name(self.hostname, self.port)}' and accept the new key "
            "deliberately; otherwise someone may be in the middle.",
            hostname=self.hostname,
            port=self.port,
            key_type=e.key.get_name(),
            fingerprint=fp,
            public_key=f"{e.key.get_name()} {e.key.get_base64()}",
        )

    def _refused(self, keys: KeySources, agent_note: str) -> ConnectError:
        if keys.locked and not keys.offered:
            return locked_key_error(keys.locked, self.name)
        notes = keys.problems + ([agent_note] if agent_note else [])
        if keys.locked:
            notes.append(f"{', '.join(map(str, keys.locked))} needs a passphrase (see --passphrase-env)")
        if not keys.offered:
            return ConnectError(
                f"No key could be offered to {self.name}: {'; '.join(notes) or 'none found'}. "
                "Give the right key file (--key) and passphrase (--passphrase-env NAME), or load the key into "
                "ssh-agent (ssh-add KEY)."
            )
        offered = ", ".join(keys.offered)
        return ConnectError(
            f"{self.hostname}:{self.port} refused the key{'s' if len(keys.offered) > 1 else ''} {offered} "
            f"for user {self.user}" + (f" ({'; '.join(notes)})" if notes else "") + ". "
            "Check the user name and that the key's public half is in that user's ~/.ssh/authorized_keys."
        )

    def _stop_proxy(self) -> None:
        if self._proxy is not None:
            proc = self._proxy.process
            self._proxy.close()  # SIGTERM to the proxy command's PID
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            self._proxy = None

    def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except (OSError, paramiko.SSHException):
                pass
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._stop_proxy()
        if self._jump is not None:
            self._jump.close()
            self._jump = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self.connect()
        if self._sftp is None:
            self._sftp = client.open_sftp()
        return self._sftp

    # ---- commands

    def run(
        self,
        cmd: Command,
        *,
        sudo: bool = False,
        user: str | None = None,
        check: bool = True,
        timeout: float = 120,
        stdin: str | bytes | None = None,
        hint: str = "",
    ) -> Result:
        """Run a command and wait for it, reading its output as it comes.

        cmd: shell string, or argument list (quoted for you).
        sudo: run as root via ``sudo -n``.
        user: run as this user via ``sudo -n -u``.
        check: raise :class:`CommandError` on a non-zero exit (default).
        timeout: seconds before the command is killed and :class:`CommandTimeout` raised.
        stdin: data fed to the command's standard input.
        hint: a sentence appended to the error message on failure.

        Example: ``host.run("iptables -t nat -S", sudo=True).stdout``.
        """
        shown = to_shell(cmd)
        wrapped = build_command(cmd, sudo=sudo, user=user, timeout=timeout)
        chan = self._open_channel()
        start = time.monotonic()
        try:
            chan.exec_command(wrapped)
            data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
            out, err, code = _drain(chan, deadline=start + timeout + _KILL_GRACE_S + 5, stdin=data)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise ConnectError(
                f"Lost the SSH connection to {self.name} while starting {to_shell(cmd)[:120]!r} ({e}). "
                "Check the host is reachable and run the step again: every step is idempotent."
            ) from None
        finally:
            chan.close()
        duration = time.monotonic() - start
        result = Result(shown, code if code is not None else 124, out, err, duration, self.name, wrapped)
        if code == -1:
            # paramiko's status for a channel closed without one: the connection dropped mid-command.
            self.close()
            raise ConnectError(
                f"Lost the SSH connection to {self.name} while it ran: {result.display_cmd[:120]}. "
                "The command may or may not have finished. "
                "Check the host is reachable and run the step again: every step is idempotent."
            )
        if code is None or code == 124 and duration >= timeout:
            raise CommandTimeout(result, timeout)
        if check and code != 0:
            raise CommandError(result, hint=hint)
        return result

    def _open_channel(self) -> paramiko.Channel:
        for attempt in (1, 2):
            transport = self.connect().get_transport()  # None once the connection has closed
            try:
                if transport is not None:
                    return transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError, AttributeError):
                pass
            # The connection dropped between commands: reconnect once; the command has not started.
            self.close()
            if attempt == 2:
                raise ConnectError(
                    f"Lost the SSH connection to {self.name} and could not open a new session. "
                    "Check the host and retry."
                ) from None
        raise AssertionError("unreachable")

    # ---- files

    def sha256(self, remote: str, sudo: bool = False) -> str | None:
        """SHA-256 of a remote file, or None when it does not exist."""
        r = self.run(["sha256sum", "--", remote], sudo=sudo, check=False, timeout=120)
        return r.stdout.split()[0] if r.ok and r.stdout else None

    def stat(self, remote: str, sudo: bool = False) -> dict | None:
        """Mode (int), owner and group of a remote path, or None when missing."""
        r = self.run(["stat", "-c", "%a %U %G", "--", remote], sudo=sudo, check=False, timeout=30)
        if not r.ok:
            return None
        mode, owner, group = r.stdout.split()
        return {"mode": int(mode, 8), "owner": owner, "group": group}

    def put(
        self,
        src: str | os.PathLike | IO,
        remote: str,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
        sudo: bool = False,
        progress: bool | None = None,
    ) -> bool:
        """Upload a local file or an in-memory file object; skip it when nothing would change.

        src: local path, or a file object (``io.StringIO``/``io.BytesIO``) for in-memory content.
        remote: destination path on the host (parent directories are created).
        mode: permission bits to set.
        owner, group: remote owner (needs sudo; default: unchanged / login user).
        sudo: write as root (for system paths).
        progress: show a tqdm bar (default: for files of 4 MiB and more).

        Returns True when the file was transferred or its mode/owner fixed, False when it was already right.

        Example: ``host.put(io.StringIO("hi\\n"), "/tmp/x", mode=0o600)``.
        """
        data_path, data = _local_source(src)
        size = data_path.stat().st_size if data_path else len(data)
        digest = sha256_local(data_path) if data_path else hashlib.sha256(data).hexdigest()
        sudo = sudo or owner is not None or group is not None
        want_owner = owner or (None if not sudo else "root")
        want_group = group or (want_owner if owner else None)
        # Every exchange costs a round trip (far from the host, 100 ms or more): one command reads the file's
        # state, one SFTP transfer and one command put it in place and verify it.
        current = self._probe(remote, sudo=sudo)
        if current and current["sha256"] == digest:
            fixes = []
            if current["mode"] != mode:
                fixes.append(f"chmod {mode:o} -- {shlex.quote(remote)}")
            if want_owner and (current["owner"] != want_owner or (want_group and current["group"] != want_group)):
                owner_group = shlex.quote(f"{want_owner}:{want_group or current['group']}")
                fixes.append(f"chown {owner_group} -- {shlex.quote(remote)}")
            if fixes:
                self.run(["sh", "-c", " && ".join(fixes)], sudo=sudo)
            return bool(fixes)
        sftp = self._sftp_client()
        if sudo:
            # A private (0700) directory of a name nobody can guess: a key being staged is never readable by
            # other users, not even briefly; mkdir fails rather than reuse a directory someone else made.
            staging_dir = f"/tmp/.tproxy-nb-{secrets.token_hex(8)}"
            sftp.mkdir(staging_dir, mode=0o700)
            staging = f"{staging_dir}/upload"
            install = ["install", "-D", "-m", f"{mode:o}"]
            install += ["-o", want_owner] if want_owner else []
            install += ["-g", want_group] if want_group else []
            finish = f'{to_shell(install)} -- "$1" "$2"; rc=$?; rm -rf -- "$3"; [ "$rc" -eq 0 ] && sha256sum -- "$2"'
            finish_argv = ["sh", "-c", finish, "sh", staging, remote, staging_dir]
        else:
            staging_dir = None
            staging = remote
            self.run(["mkdir", "-p", "--", os.path.dirname(remote) or "."])
            finish_argv = ["sh", "-c", 'chmod "$1" -- "$2" && sha256sum -- "$2"', "sh", f"{mode:o}", remote]
        show = progress if progress is not None else size >= PROGRESS_MIN_BYTES
        fileobj = open(data_path, "rb") if data_path else io.BytesIO(data)
        try:
            with fileobj, _progress_bar(show, size, os.path.basename(remote)) as cb:
                sftp.putfo(fileobj, staging, file_size=size, callback=cb, confirm=True)
        except BaseException:
            if staging_dir:
                self.run(["rm", "-rf", "--", staging_dir], check=False)
            raise
        r = self.run(finish_argv, sudo=sudo, check=False, timeout=300)
        got = r.stdout.split()[0] if r.ok and r.stdout else None
        if not r.ok and not r.stdout:
            raise CommandError(r)
        if got != digest:
            raise TproxyError(
                f"Upload of {remote} to {self.name} arrived corrupted (sha256 {got} != {digest}). "
                "Retry; check free disk space on the host."
            )
        return True

    def _probe(self, remote: str, sudo: bool = False) -> dict | None:
        """Mode (int), owner, group and sha256 of a remote file in one round trip, or None when it is missing."""
        script = 'stat -c "%a %U %G" -- "$1" && sha256sum -- "$1"'
        r = self.run(["sh", "-c", script, "sh", remote], sudo=sudo, check=False, timeout=120)
        fields = r.stdout.split()
        if not r.ok or len(fields) < 4:
            return None
        return {"mode": int(fields[0], 8), "owner": fields[1], "group": fields[2], "sha256": fields[3]}

    def put_text(self, text: str, remote: str, **kw) -> bool:
        """Upload ``text`` as a file (UTF-8); same options as :meth:`put`."""
        return self.put(io.BytesIO(text.encode()), remote, **kw)

    def get(self, remote: str, local: str | os.PathLike | None = None, *, sudo: bool = False) -> str | Path:
        """Download a file; return its text (when ``local`` is None) or the local path.

        sudo: read a file only root can read.

        The file is first copied into a private temporary directory on the host, so a file that grows
        while it is read (a log) arrives as one consistent snapshot whose hash is checked.

        Example: ``host.get("/opt/tproxy-nb/log/igw.log", sudo=True)[:200]``.
        """
        # Snapshot first, into a private directory: a log that grows while we read it is then one
        # consistent copy, and the hash we check belongs to exactly the bytes we download.
        staging_dir = self.run(["mktemp", "-d", "/tmp/.tproxy-nb-XXXXXXXX"]).stdout.strip()
        src = f"{staging_dir}/download"
        try:
            snapshot = (
                ["install", "-m", "600", "-o", self.user, "--", remote, src] if sudo else ["cp", "--", remote, src]
            )
            copied = self.run(snapshot, sudo=sudo, check=False, timeout=300)
            if not copied.ok:
                raise TproxyError(
                    f"{remote} does not exist on {self.name} (or cannot be read: {copied.tail(1, 'stderr')}); "
                    "nothing was downloaded."
                )
            digest = self.sha256(src)
            buf = io.BytesIO()
            sftp = self._sftp_client()
            size = sftp.stat(src).st_size or 0
            with _progress_bar(size >= PROGRESS_MIN_BYTES, size, os.path.basename(remote)) as cb:
                sftp.getfo(src, buf, callback=cb)
        finally:
            self.run(["rm", "-rf", "--", staging_dir], check=False)
        data = buf.getvalue()
        if hashlib.sha256(data).hexdigest() != digest:
            raise TproxyError(f"The download of {remote} from {self.name} arrived corrupted (sha256 mismatch); retry.")
        if local is None:
            return data.decode("utf-8", errors="replace")
        out = Path(local)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out


def _drain(chan: paramiko.Channel, deadline: float, stdin: bytes = b"") -> tuple[str, str, int | None]:
    """Feed stdin and read stdout and stderr until the command exits.

    Never recv_exit_status() first, and never all of stdin before reading: either deadlocks once
    the command's output fills the SSH window while we wait on something else.
    """
    out, err = bytearray(), bytearray()
    pending = memoryview(stdin)
    if not pending:
        chan.shutdown_write()
    while True:
        got = False
        if pending and chan.send_ready():
            sent = chan.send(bytes(pending[: 1 << 15]))  # paramiko is typed for bytes only
            pending = pending[sent:]
            got = True
            if not pending:
                chan.shutdown_write()
        while chan.recv_ready():
            out += chan.recv(1 << 16)
            got = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(1 << 16)
            got = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            # Output may trail the exit status; the channel's EOF says it is complete.
            if chan.eof_received or chan.closed:
                break
        if time.monotonic() > deadline:
            return out.decode(errors="replace"), err.decode(errors="replace"), None
        if not got:
            select.select([chan], [], [], 0.05)
    return out.decode(errors="replace"), err.decode(errors="replace"), chan.recv_exit_status()


def _local_source(src) -> tuple[Path | None, bytes]:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src).expanduser()
        if not path.is_file():
            raise TproxyError(f"The local file {path} does not exist; nothing was uploaded.")
        return path, b""
    data = src.read()
    return None, data.encode() if isinstance(data, str) else data


def sha256_local(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _progress_bar:
    """A tqdm bar driven by paramiko's transfer callback, or a no-op."""

    def __init__(self, show: bool, total: int, label: str):
        from ..progress import bar, enabled

        self.bar = bar(total=total, desc=label, unit="B", unit_scale=True) if show and enabled() else None

    def __enter__(self):
        bar = self.bar
        if bar is None:
            return None
        done = [0]

        def cb(transferred: int, _total: int) -> None:
            bar.update(transferred - done[0])
            done[0] = transferred

        return cb

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def require_sudo(host: Host) -> None:
    """Fail with a clear message when the login user cannot use sudo without a password."""
    r = host.run(["true"], sudo=True, check=False, timeout=30)
    if not r.ok:
        raise ConnectError(
            f"The login user {host.user} on {host.hostname} cannot run sudo without a password "
            f"({r.tail(1, 'stderr') or 'sudo -n true failed'}). Use a user with passwordless sudo "
            "(as 'admin' on a Debian AMI), or add a sudoers entry for it. Nothing was changed."
        )


def which(host: Host, names: Iterable[str], sudo: bool = False) -> dict[str, str | None]:
    """Path of each program on the host, or None where it is missing.

    sudo: look in root's PATH (sbin directories), where iptables and useradd live.
    """
    names = list(names)
    script = "; ".join(f"printf '%s\\n' \"$(command -v {shlex.quote(n)} || true)\"" for n in names)
    lines = host.run(script, sudo=sudo, check=False, timeout=30).stdout.split("\n")
    return {n: (lines[i].strip() or None) if i < len(lines) else None for i, n in enumerate(names)}
