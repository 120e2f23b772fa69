"""Name a target as a string and get a connected-on-demand Host: ``"lab"`` or ``"user@host[:port]"``.

``replay:DIR`` names a recorded run's data bundle instead: analysis without any host (:func:`replay_dir`).

Example::

    host = connect("lab")                                  # the local lab (brought up if needed)
    host = connect("admin@203.0.113.10", key_file="~/.ssh/ec2.pem")
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConnectError
from .remote.host import Host

LAB = "lab"
REPLAY = "replay:"


def is_lab(target: str | None) -> bool:
    return (target or LAB).strip() == LAB


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
) -> Host:
    """A :class:`Host` for ``target``; for the lab, bring it up first (idempotent). A replay has no host.

    target: ``"lab"`` (default) or ``"user@host[:port]"`` (an ``~/.ssh/config`` alias works as host).
    key_file: private key for a non-lab target.
    known_hosts: file with the pinned host key (default ``~/.ssh/known_hosts``).
    passphrase: the key's passphrase, if any.
    """
    if replay_dir(target) is not None:
        raise ConnectError(
            f"{target} is a recorded run, not a host: it can be analysed (tproxy-nb run, tproxy-nb trace), "
            "not provisioned or checked. Name a host (lab or user@host[:port]) for that."
        )
    if is_lab(target):
        from . import lab

        info = lab.up()
        return info.host_obj()
    if not target or not target.strip():
        raise ConnectError("No target given. Use 'lab' or user@host[:port] with a key file.")
    return Host.from_target(target, key_file=key_file, known_hosts=known_hosts, passphrase=passphrase)
