"""Reaching a host over SSH: :class:`~tproxy_nb.remote.host.Host` (the only module that imports
paramiko) and its :class:`~tproxy_nb.remote.host.Result`.

May import ``errors`` and ``progress`` and nothing else of the package: it knows nothing of
the tutorial, so it can be reused to reach any host.
"""
