"""Name a target as a string and get a connected-on-demand Host: ``"lab"``, ``"user@host[:port]"`` or an alias.

``lab:rootfs`` is the lab's second host: a Debian root filesystem of its own (:mod:`tproxy_nb.lab.rootfs`),
so accounts, files and shared memory land there, not on this machine.

A non-lab target is reached as ``ssh TARGET`` would reach it: ``~/.ssh/config`` (HostName, User, Port,
IdentityFile, ProxyJump, ProxyCommand, UserKnownHostsFile), ssh-agent, strict host keys.

``replay:DIR`` names a recorded run's data bundle instead: analysis without any host (:func:`replay_dir`).

Example::

    host = connect("lab")                                  # the local lab (brought up if needed)
    host = connect("lab:rootfs")                           # the lab's host with its own Debian root filesystem
    host = connect("admin@203.0.113.10", key_file="~/.ssh/ec2.pem")
    host = connect("my-ec2")                               # a Host alias from ~/.ssh/config
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConnectError
from .remote.host import Host, Passphrase

LAB = "lab"
LAB_ROOTFS = "lab:rootfs"
REPLAY = "replay:"


def is_lab(target: str | None) -> bool:
    """True for the local lab's hosts (``lab``, ``lab:rootfs``): built here, their sshd out of a rule's reach."""
    return (target or LAB).strip() in (LAB, LAB_ROOTFS)


def replay_dir(target: str | None) -> Path | None:
    """The bundle directory of a ``replay:DIR`` target (``~`` expanded), None for any other target.

    Example: ``replay_dir("replay:build/report/data")`` -> ``PosixPath('build/report/data')``.
    """
    text = (target or "").strip()
    if not text.startswith(REPLAY):
        return None
    path = text[len(REPLAY) :].strip()
    if not path:
        raise ConnectError("replay: needs a directory, e.g. --target replay:build/report/data (a run's data bundle).")
    return Path(path).expanduser()


def connect(
    target: str | None = LAB,
    key_file: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    passphrase: str | None = None,
    passphrase_env: str | None = None,
    ssh_config: str | os.PathLike | None = None,
) -> Host:
    """A :class:`Host` for ``target``; for the lab, bring it up first (idempotent). A replay has no host.

    target: ``"lab"`` (default), ``"lab:rootfs"`` or ``"user@host[:port]"`` (an ``~/.ssh/config`` alias works).
    key_file: private key for a non-lab target (offered before the config's and ssh-agent's keys).
    known_hosts: file with the pinned host key (default: UserKnownHostsFile, else ``~/.ssh/known_hosts``).
    passphrase: the key's passphrase, if any.
    passphrase_env: name of the environment variable holding the passphrase (``--passphrase-env``).
    ssh_config: ssh_config file to read (default ``~/.ssh/config``).
    """
    if replay_dir(target) is not None:
        raise ConnectError(
            f"{target} is a recorded run, not a host: it can be analysed (tproxy-nb run, tproxy-nb trace), "
            "not provisioned or checked. Name a host (lab or user@host[:port]) for that."
        )
    if is_lab(target):
        from . import lab

        info = lab.rootfs.up() if (target or "").strip() == LAB_ROOTFS else lab.up()
        return info.host_obj()
    if not target or not target.strip():
        raise ConnectError("No target given. Use 'lab', user@host[:port] or a Host alias from ~/.ssh/config.")
    secret = Passphrase(passphrase, "passphrase=") if passphrase is not None else Passphrase.from_env(passphrase_env)
    return Host.from_target(
        target, key_file=key_file, known_hosts=known_hosts, passphrase=secret, ssh_config=ssh_config
    )
