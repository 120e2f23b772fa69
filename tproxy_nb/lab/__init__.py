"""The local lab: an EC2 stand-in and a stand-in internet in two network namespaces on this machine.

``core`` builds and tears down the namespaces, the host's real ``sshd`` and its login
user; ``standin`` is the stand-in web server run inside the internet namespace; ``sshd`` is the one way
the lab's OpenSSH servers are configured, started and checked; ``netns`` runs commands, stops processes
by PID and wires veth pairs; ``bastion`` is a jump host for tests; ``rootfs`` is a second host with its
own Debian root filesystem (``lab:rootfs``).
May import ``errors``, ``marks``, ``settings``, ``render`` (the lab CA) and ``remote``
(a Host for the lab); nothing of ``steps``, ``analysis`` or ``present``.

Example::

    from tproxy_nb import lab
    info = lab.up(); host = info.host_obj(); lab.down()
"""

from . import rootfs
from .core import (
    HOST_NS,
    INDEX_URL,
    INET_NS,
    LOGIN_USER,
    NAMESPACES,
    SITES,
    SITES6,
    STATE_DIR,
    LabInfo,
    down,
    leftovers,
    namespace_pids,
    require_root,
    status,
    to_json,
    up,
)

__all__ = [
    "HOST_NS",
    "INDEX_URL",
    "INET_NS",
    "LOGIN_USER",
    "NAMESPACES",
    "SITES",
    "SITES6",
    "STATE_DIR",
    "LabInfo",
    "down",
    "leftovers",
    "namespace_pids",
    "require_root",
    "status",
    "to_json",
    "rootfs",
    "up",
]
