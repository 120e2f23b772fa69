"""Follow one curl request across the sidecar and a gateway: one ordered table of events.

The join, hop by hop (access logs first; they carry the addresses a join needs):

1. curl's local port -> the sidecar connection whose downstream remote address has that port;
2. that connection's upstream (sidecar -> gateway) -> the gateway connection whose downstream
   remote address is the sidecar's upstream local address. When the sidecar never finished the
   upstream stream (the denied CONNECT), Envoy logs no upstream local address; then the gateway
   connection is the one that got the same authority (SNI:port or Host) at the nearest time, and
   the ``link`` column says the hop was inferred;
3. the gateway connection's debug records: request, RBAC verdict, response, close.

Events are ordered by time; those that share a millisecond (Envoy logs to the millisecond) by the
request's causal stage (client -> sidecar -> gateway -> sidecar -> client), then by line.

Example::

    logs = fetch(host, settings)                       # the only function here that touches a host
    row = results.set_index("case").loc["https denied"]
    t = trace(row, logs)
    plots.timeline(t)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from . import logs as envoy_logs

TRACE_COLUMNS = ["time", "process", "connection_id", "stream_id", "stage", "kind", "event", "line_no", "link"]


@dataclass(frozen=True)
class _Rule:
    """A debug record worth showing: when its message matches, it becomes an event."""

    pattern: re.Pattern
    stage: int
    kind: str
    label: str  # format string over the match's groups


def _r(pattern: str, stage: int, kind: str, label: str) -> _Rule:
    return _Rule(re.compile(pattern), stage, kind, label)


# Stages: 0 client connects, 1 client hello, 2 sidecar accepts/inspects, 3 sidecar opens upstream,
# 4 sidecar sends the request/CONNECT, 5 gateway accepts + reads, 6 verdict, 7 gateway answers,
# 8 gateway closes, 9 sidecar sees the upstream end, 10 sidecar closes the client, 11 client's end.
SIDECAR_RULES = [
    _r(r"new connection from (\S+)", 2, "accept", "accepts the redirected connection from {0}"),
    _r(r"original_dst: set destination to (\S+)", 2, "inspect", "original destination {0} (SO_ORIGINAL_DST)"),
    _r(r"requestedServerName: (\S+)", 2, "inspect", "reads SNI {0} from the ClientHello (not answering it)"),
    _r(r"Creating connection to cluster (\S+)", 3, "upstream", "opens a tunnel to cluster {0}"),
    _r(r"connecting to (\S+)", 3, "upstream", "connects to the gateway at {0} (mTLS)"),
    _r(
        r"Attached upstream connection \[C(\d+)\] to downstream connection \[C(\d+)\]",
        4,
        "request",
        "sends {verb} over upstream C{0} for client C{1}",
    ),
    _r(r"request headers complete", 4, "request", "reads the client's HTTP request"),
    _r(r"router decoding headers", 4, "request", "forwards the request to the gateway"),
    _r(r"upstream headers complete", 9, "response", "gets the gateway's response"),
    _r(r"encoding headers via codec", 9, "response", "answers the client"),
    _r(r"Request reset\. Reason (\d+)", 9, "close", "tunnel stream reset by the gateway's answer (reason {0})"),
    _r(r"remote close", 9, "close", "the peer closed"),
    _r(r"closing data_to_write=(\d+) type=(\d+)", 10, "close", "closes the connection (data_to_write={0})"),
]
# RBAC verdicts carry no ids; they come from logs.rbac_decisions, which attributes them by thread.
GATEWAY_RULES = [
    _r(r"new connection from (\S+)", 5, "accept", "accepts the sidecar's mTLS connection from {0}"),
    _r(r"request headers complete", 5, "request", "reads the request headers"),
    _r(r"encoding headers via codec", 7, "response", "answers"),
    _r(r"closing data_to_write=(\d+) type=(\d+)", 8, "close", "closes the connection (data_to_write={0})"),
]


def _port(address: object) -> int | None:
    m = re.search(r":(\d+)$", str(address)) if isinstance(address, str) else None
    return int(m.group(1)) if m else None


def _header(message: str, name: str) -> str | None:
    m = re.search(rf"'{re.escape(name)}', '([^']*)'", message)
    return m.group(1) if m else None


def _label(rule: _Rule, m: re.Match, message: str) -> str:
    groups = [g if g is not None else "none" for g in m.groups()]
    # {verb} is filled in by trace(), which knows whether the connection is tunnelled TLS or HTTP.
    text = rule.label.format(*groups, verb="{verb}") if groups else rule.label
    if rule.kind == "response":
        status = _header(message, ":status")
        close = _header(message, "connection") == "close"
        text += f": {status}" + (" with connection: close" if close else "") if status else ""
    if rule.kind == "request" and "headers complete" in message:
        method, authority = _header(message, ":method"), _header(message, ":authority")
        if method:
            text += f": {method} {authority}"
    return text


def _events(debug: pd.DataFrame, process: str, conn_ids: set[int], rules: list[_Rule], link: str) -> list[dict]:
    """Events of ``process`` for the given connections, plus RBAC verdicts attributed to them."""
    rows: list[dict] = []
    if debug is None or debug.empty:
        return rows
    ids = list(conn_ids)
    # Records that name our connections in their text ("Attached upstream connection [C8] to ... [C7]")
    # carry no id tag; they belong here too.
    named = debug["connection_id"].isna() & debug["message"].str.contains(
        "|".join(rf"\[C{i}\]" for i in ids), regex=True
    )
    mine = debug[debug["connection_id"].isin(ids) | named]
    for rec in mine.itertuples(index=False):
        conn = rec.connection_id if pd.notna(rec.connection_id) else next(i for i in ids if f"[C{i}]" in rec.message)
        for rule in rules:
            m = rule.pattern.search(rec.message)
            if m:
                rows.append(
                    _row(
                        rec.timestamp,
                        process,
                        conn,
                        rec.stream_id,
                        rule.stage,
                        rule.kind,
                        _label(rule, m, rec.message),
                        rec.line_no,
                        link,
                    )
                )
                break
    # RBAC lines carry no ids: take the attribution logs.rbac_decisions makes from the thread.
    verdicts = envoy_logs.rbac_decisions(debug)
    for v in verdicts[verdicts["connection_id"].isin(list(conn_ids))].itertuples(index=False):
        rows.append(
            _row(
                v.timestamp,
                process,
                v.connection_id,
                v.stream_id,
                6,
                "verdict",
                f"RBAC {v.decision} (policy {v.policy or 'none'})",
                v.line_no,
                link,
            )
        )
    # Listener filters (original_dst, tls_inspector) log before the connection has an id: take the
    # nearest such records on the same thread within 50 ms before its first record.
    if not mine.empty and rules is SIDECAR_RULES:
        first = mine.iloc[0]
        window = debug[
            (debug["line_no"] < first["line_no"])
            & (debug["thread"] == first["thread"])
            & debug["connection_id"].isna()
            & (debug["timestamp"] >= first["timestamp"] - pd.Timedelta(milliseconds=50))
        ]
        for rule in rules[1:3]:
            hits = window[window["message"].map(lambda text, r=rule: r.pattern.search(text) is not None)]
            if len(hits):
                rec = hits.iloc[-1]
                m = rule.pattern.search(rec["message"])
                assert m is not None  # hits holds only messages it matches
                rows.append(
                    _row(
                        rec["timestamp"],
                        process,
                        first["connection_id"],
                        None,
                        rule.stage,
                        rule.kind,
                        _label(rule, m, rec["message"]),
                        rec["line_no"],
                        link,
                    )
                )
    return rows


def _row(time, process, conn, stream, stage, kind, event, line_no, link) -> dict:
    return {
        "time": time,
        "process": process,
        "connection_id": conn,
        "stream_id": stream,
        "stage": stage,
        "kind": kind,
        "event": event,
        "line_no": line_no,
        "link": link,
    }


def _gateway_for(side: pd.Series, gateways: dict[str, dict]) -> tuple[str, pd.Series, str] | None:
    """The gateway access-log row that the sidecar's upstream connection fed."""
    upstream_port = _port(side.get("upstream_host"))
    candidates = []
    for name, data in gateways.items():
        access = data.get("access")
        if access is None or access.empty:
            continue
        local = access["downstream_local_address"].map(_port)
        if upstream_port is not None:
            access = access[local == upstream_port]
        candidates.append((name, access))
    ula = side.get("upstream_local_address")
    if isinstance(ula, str) and ula:
        for name, access in candidates:
            hit = access[access["downstream_remote_address"] == ula]
            if len(hit):
                return name, hit.iloc[0], "exact: sidecar upstream local address = gateway downstream remote address"
    # The denied CONNECT: Envoy logs no upstream local address. Match authority and time instead.
    sni = side.get("requested_server_name")
    authority = (
        f"{sni}:{_port(side.get('downstream_local_address'))}"
        if isinstance(sni, str) and sni
        else side.get("authority")
    )
    best = None
    for name, access in candidates:
        same = access[access["authority"] == authority]
        if len(same):
            dt = (same["start_time"] - side["start_time"]).abs()
            i = dt.idxmin()
            if best is None or dt[i] < best[0]:
                best = (dt[i], name, same.loc[i])
    if best is not None and best[0] <= pd.Timedelta(seconds=2):
        return best[1], best[2], f"inferred: same authority {authority} within {best[0].total_seconds() * 1000:.0f} ms"
    return None


def trace(curl_row: pd.Series | dict, logs: dict[str, dict]) -> pd.DataFrame:
    """One ordered table of what happened to one curl request in curl, the sidecar and a gateway.

    curl_row: one row of :func:`tproxy_nb.steps.check.run_cases` (needs ``local_port``, ``time_connect``,
        ``time_total``, ``outcome``, ``exit_code``, ``error``, ``url``).
    logs: ``{"sidecar": {"debug": df, "access": df}, "igw": {...}, "igw_http": {...}}`` as made by
        :func:`parse_all` (parsed debug log and parsed access log per Envoy).

    Returns columns ``time, process, connection_id, stream_id, stage, kind, event, line_no, link``;
    empty (with a ``attrs["problem"]``) when the request cannot be found in the logs.
    """
    row = pd.Series(curl_row)
    port = int(row["local_port"]) if pd.notna(row.get("local_port")) else None
    out = pd.DataFrame(columns=TRACE_COLUMNS)
    side_access = logs.get("sidecar", {}).get("access")
    if port is None or side_access is None or side_access.empty:
        out.attrs["problem"] = "no local port in the curl result, or no sidecar access log"
        return out
    hit = side_access[side_access["downstream_remote_address"].map(_port) == port]
    if hit.empty:
        out.attrs["problem"] = (
            f"the sidecar's access log has no connection from local port {port} (request bypassed the proxy?)"
        )
        return out
    side = hit.iloc[-1]
    side_conns = {int(side["connection_id"])}
    if pd.notna(side.get("upstream_connection_id")):
        side_conns.add(int(side["upstream_connection_id"]))
    events = _events(
        logs["sidecar"].get("debug"), "sidecar", side_conns, SIDECAR_RULES, f"exact: curl local port {port}"
    )
    gateway = _gateway_for(side, {k: v for k, v in logs.items() if k != "sidecar"})
    if gateway is not None:
        name, gw, link = gateway
        events += _events(logs[name].get("debug"), name, {int(gw["connection_id"])}, GATEWAY_RULES, link)
    if not events:
        out.attrs["problem"] = "the debug logs hold no records for this request (log level below debug?)"
        return out
    df = pd.DataFrame(events, columns=TRACE_COLUMNS)
    downstream = int(side["connection_id"])
    # Name the sidecar's closes by which side they end: the client's connection or its own upstream.
    closes = (df["process"] == "sidecar") & (df["kind"] == "close")
    down = closes & (df["connection_id"] == downstream)
    df.loc[closes & ~down, "stage"] = 9
    sni = side.get("requested_server_name")
    verb = (
        f"CONNECT {sni}:{_port(side.get('downstream_local_address'))}"
        if isinstance(sni, str) and sni
        else "the request"
    )
    df["event"] = df["event"].str.replace("{verb}", verb, regex=False)
    reset = row.get("outcome") == "reset"
    df.loc[down & df["event"].str.startswith("closes"), "event"] = (
        "closes curl's connection with the ClientHello unread: the kernel sends RST"
        if reset
        else "closes curl's connection"
    )
    # Curl's side, placed on the sidecar's clock: it connected when the sidecar first saw it, and
    # its end came time_total - time_connect later.
    t_connect = df.loc[df["process"] == "sidecar", "time"].min()
    dest = row.get("url", "")
    client = [
        _row(
            t_connect,
            "curl",
            None,
            None,
            0,
            "connect",
            f"connects to {row.get('remote_ip') or dest}:{row.get('remote_port') or ''} (iptables redirects it)",
            0,
            "curl",
        ),
    ]
    if str(dest).startswith("https"):
        client.append(
            _row(
                t_connect,
                "curl",
                None,
                None,
                1,
                "request",
                "sends its TLS ClientHello (SNI " + str(side.get("requested_server_name")) + ")",
                0,
                "curl",
            )
        )
    else:
        client.append(_row(t_connect, "curl", None, None, 1, "request", "sends its HTTP request", 0, "curl"))
    total = float(row.get("time_total") or 0) - float(row.get("time_connect") or 0)
    outcome = row.get("outcome")
    end = (
        f"sees HTTP {row.get('http_code')}"
        if outcome in ("allowed", "denied")
        else f"fails: {row.get('error') or 'exit ' + str(row.get('exit_code'))}"
    )
    # curl's clock is finer than Envoy's millisecond stamps; it cannot have seen its answer before the
    # sidecar gave it, so its end is no earlier than the sidecar's last word on its connection.
    delivered = df.loc[
        (df["process"] == "sidecar")
        & (df["connection_id"] == downstream)
        & df["event"].str.startswith(("answers the client", "closes curl's")),
        "time",
    ]
    t_end = t_connect + pd.Timedelta(seconds=max(total, 0))
    if len(delivered):
        t_end = max(t_end, delivered.min())
    client.append(_row(t_end, "curl", None, None, 11, "reset" if outcome == "reset" else "end", end, 0, "curl"))
    df = pd.concat([pd.DataFrame(client, columns=TRACE_COLUMNS), df], ignore_index=True)
    df["time"] = pd.to_datetime(df["time"])
    # Envoy logs some closes twice; one event each is enough. All processes share the host's clock,
    # but only to the millisecond: within one millisecond the causal stage orders the hops, then the line.
    df = df.drop_duplicates(subset=["process", "connection_id", "kind", "event"])
    df = df.sort_values(["time", "stage", "line_no"], kind="stable")
    return df.reset_index(drop=True)


def parse_all(texts: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Parse ``{"sidecar": {"debug": text, "access": text}, ...}`` into DataFrames (pure)."""
    return {
        name: {
            "debug": envoy_logs.parse_envoy_log(t.get("debug", "")),
            "access": envoy_logs.parse_access_log(t.get("access", "")),
        }
        for name, t in texts.items()
    }
