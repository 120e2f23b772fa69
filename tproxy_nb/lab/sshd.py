"""The lab's OpenSSH servers: one config shape, one start-and-wait, one host-key fingerprint.

The lab's host, the bastion and the rootfs host each run a real ``sshd``; they differ in where it
listens, its key and its namespace, not in how it is configured, started or checked.

Example::

    write_config(d / "sshd_config", "198.18.2.2", 22, d / "ssh_host_ed25519_key", pid_file=d / "sshd.pid")
    subprocess.run(["ip", "netns", "exec", NS, "/usr/sbin/sshd", "-f", str(d / "sshd_config"), "-E", str(log)])
    wait("198.18.2.2", 22, log)   # the banner answers, or LabError naming the log
"""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
import time
from pathlib import Path

from ..errors import LabError

#: What every lab sshd differs in from OpenSSH's defaults: keys only, no PAM (no password, no
#: session modules to satisfy), room for the tutorial's parallel sessions.
OPTIONS = {
    "AuthorizedKeysFile": ".ssh/authorized_keys",
    "PubkeyAuthentication": "yes",
    "PasswordAuthentication": "no",
    "KbdInteractiveAuthentication": "no",
    "PermitRootLogin": "no",
    "UsePAM": "no",
    "MaxSessions": "64",
    "MaxStartups": "64:30:128",
}
START_TIMEOUT_S = 10


def config_text(addr: str, port: int, host_key: str | Path, pid_file: str | Path | None = None, **extra) -> str:
    """An sshd_config: :data:`OPTIONS`, where to listen, the host key, a PID file, then ``extra`` (option=value).

    Example: ``"ListenAddress 198.18.0.2:22" in config_text("198.18.0.2", 22, "/k")`` -> True.
    """
    options: dict[str, object] = {"ListenAddress": f"{addr}:{port}", "HostKey": host_key}
    if pid_file is not None:
        options["PidFile"] = pid_file
    options |= OPTIONS | extra
    return "".join(f"{k} {v}\n" for k, v in options.items())


def write_config(path: Path, addr: str, port: int, host_key: str | Path, **kw) -> Path:
    """Write :func:`config_text` to ``path`` and return it."""
    path.write_text(config_text(addr, port, host_key, **kw))
    return path


def answers(addr: str, port: int, timeout: float = 1.0) -> bool:
    """True when an SSH server's banner comes back from ``addr:port``."""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def wait(addr: str, port: int, log: Path, proc: subprocess.Popen | None = None, what: str = "sshd") -> None:
    """Wait (bounded) until ``addr:port`` answers; raise :class:`LabError` naming ``log`` when it does not.

    proc: the server's process when it runs in the foreground; its exit ends the wait at once.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if answers(addr, port, timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
    raise LabError(
        f"{what} did not answer on {addr}:{port} within {START_TIMEOUT_S} s: {' / '.join(tail) or 'no output'}. "
        f"See {log}."
    )


def fingerprint(public_key: str) -> str:
    """The SHA256 fingerprint ``ssh-keygen -l`` prints for an OpenSSH public key line.

    Example: ``fingerprint("ssh-ed25519 AAAAC3Nz... comment")`` -> ``"SHA256:..."``.
    """
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_line(addr: str, public_key: str) -> str:
    """A known_hosts line pinning ``public_key`` for ``addr``."""
    key_type, key_b64 = public_key.split()[:2]
    return f"{addr} {key_type} {key_b64}"
