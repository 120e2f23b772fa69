"""Reaching a host over SSH the way ``ssh`` does: :class:`~tproxy_nb.remote.host.Host` and its
:class:`~tproxy_nb.remote.host.Result` (``host``: connections, sockets, jump hosts, proxy commands),
``sshconfig`` (pure: ``~/.ssh/config`` resolved into a ``Resolved`` target), ``keys`` (ssh-agent,
key files, passphrases). The only layer that imports paramiko.

May import ``errors`` and ``progress`` and nothing else of the package: it knows nothing of
the tutorial, so it can be reused to reach any host.
"""
