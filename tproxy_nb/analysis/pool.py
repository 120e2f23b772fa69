"""How many connections the gateways took for how many requests: the pooling of the tunnels (pure).

Input: two reads of :func:`tproxy_nb.steps.envoy_proc.gateway_counts` around some requests. With
``tunnel: http1`` every CONNECT to ``igw`` is a connection of its own; with ``http2`` the CONNECTs are
streams of a few pooled connections; plain HTTP to ``igw_http`` reuses kept-alive HTTP/1.1 connections.

Example::

    before = envoy_proc.gateway_counts(host, s); check.run_cases(host, s, repeat=5)
    per_gateway(before, envoy_proc.gateway_counts(host, s))
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ["gateway", "requests", "connections", "connections_per_request"]


def per_gateway(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> pd.DataFrame:
    """One row per gateway: requests and connections it took between two reads, and their ratio.

    before, after: ``{gateway: {"connections": n, "requests": n}}`` (counters since the gateway started).

    Example: ``per_gateway({"igw": {"connections": 2, "requests": 2}}, {"igw": {"connections": 3, "requests": 12}})``
    -> one row: igw, 10, 1, 0.1.
    """
    rows = []
    for gateway, now in after.items():
        was = before.get(gateway, {})
        rq = now["requests"] - was.get("requests", 0)
        cx = now["connections"] - was.get("connections", 0)
        rows.append(
            {"gateway": gateway, "requests": rq, "connections": cx, "connections_per_request": cx / rq if rq else None}
        )
    return pd.DataFrame(rows, columns=COLUMNS)
