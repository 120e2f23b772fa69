"""Name a target as a string and get a connected-on-demand Host: ``"lab"`` or ``"user@host[:port]"``.

Example::

    host = connect("lab")                                  # the local lab (brought up if needed)
    host = connect("admin@203.0.113.10", key_file="~/.ssh/ec2.pem")
"""

from __future__ import annotations

import os

from .errors import ConnectError
from .remote.host import Host

LAB = "lab"


def is_lab(target: str | None) -> bool:
    return (target or LAB).strip() == LAB


def connect(
    target: str | None = LAB,
    key_file: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    passphrase: str | None = None,
) -> Host:
    """A :class:`Host` for ``target``; for the lab, bring it up first (idempotent).

    target: ``"lab"`` (default) or ``"user@host[:port]"`` (an ``~/.ssh/config`` alias works as host).
    key_file: private key for a non-lab target.
    known_hosts: file with the pinned host key (default ``~/.ssh/known_hosts``).
    passphrase: the key's passphrase, if any.
    """
    if is_lab(target):
        from . import lab

        info = lab.up()
        return info.host_obj()
    if not target or not target.strip():
        raise ConnectError("No target given. Use 'lab' or user@host[:port] with a key file.")
    return Host.from_target(target, key_file=key_file, known_hosts=known_hosts, passphrase=passphrase)
