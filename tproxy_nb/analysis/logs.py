"""Envoy logs as pandas DataFrames: RBAC verdicts, responses, connections, the access log.

The debug log is read by :func:`~tproxy_nb.analysis.logparse.parse_envoy_log` (formats
and conventions are described there); it and :data:`COLUMNS` are re-exported
here. The functions below take its frame and answer one question each, and
:func:`parse_access_log` reads the JSON access log that :data:`ACCESS_LOG_FORMAT`
configures.

Example:
    >>> df = parse_envoy_log("envoy.log")
    >>> rbac_decisions(df).query("decision == 'denied'")
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

from ..render.envoy import ACCESS_LOG_FORMAT  # the json_format the templates render; read back here
from .logparse import (  # re-exported: tproxy_nb.analysis.logs.parse_envoy_log  # shared with the access-log reader
    _TEXT,
    COLUMNS,
    Source,
    _binary,
    _to_uint,
    parse_envoy_log,
)

__all__ = [
    "ACCESS_LOG_FORMAT",
    "COLUMNS",
    "connections",
    "parse_access_log",
    "parse_envoy_log",
    "rbac_decisions",
    "responses",
    "summary",
]


# ---------------------------------------------------------------- analysis


def _records(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that are Envoy records (non-record lines have no level)."""
    return df[df["level"].notna()]


def _starting(messages: pd.Series, prefix: str) -> pd.Series:
    return messages.str.startswith(prefix).fillna(False).astype(bool)


def _last_per_thread(records: pd.DataFrame, column: str, where: pd.Series) -> pd.Series:
    """For each record, ``column`` of the latest record up to it, on its thread, where ``where`` holds.

    Records of a format that prints no thread (Istio's shorter forms) count as one thread.
    """
    return records[column].where(where).groupby(records["thread"].fillna(-1)).ffill()


_VERDICT = r"^(?P<mode>shadow|enforced) (?P<verdict>allowed|denied)(?:, matched policy (?P<policy>.+))?$"


def _rbac_peer(message: str) -> str | None:
    """The peer the RBAC filter printed in "checking connection: ...", best name first."""
    for key in ("directRemoteIP", "remoteAddress", "sourceIP"):  # 1.40 prints all three; older ones remoteAddress
        m = re.search(key + r": ?([^,\s]+)", message)
        if m:
            return m[1]
    return None


def rbac_decisions(df: pd.DataFrame) -> pd.DataFrame:
    """One row per RBAC verdict ("enforced denied, matched policy none", "shadow allowed", ...).

    Envoy's RBAC lines carry no ids, so each verdict is attributed:

    * HTTP filter (``source`` under ``filters/http/rbac``): to the stream the
      same thread last logged with a stream id, and that record's connection;
    * network filter (``filters/network/rbac``): to the connection opened on
      that thread from the peer the filter printed in its ``checking
      connection`` line ("new connection from <peer>"), else to the
      connection the thread last logged. The bare "last connection" rule
      picks the wrong one when the upstream is accepted by the same Envoy.

    df: the output of :func:`parse_envoy_log`.

    Columns: ``connection_id``, ``stream_id`` (null for network verdicts),
    ``decision`` (``allowed``, ``denied``, ``shadow allowed``, ``shadow denied``),
    ``policy`` (None when Envoy names none), ``filter`` (``http``/``network``),
    ``timestamp``, ``thread``, ``line_no``.

    Example:
        >>> rbac_decisions(parse_envoy_log("envoy.log")).query("decision == 'denied'")
    """
    records = _records(df).reset_index(drop=True)
    stream_seen = records["stream_id"].notna()
    last_stream = _last_per_thread(records, "stream_id", stream_seen)
    last_stream_conn = _last_per_thread(records, "connection_id", stream_seen)
    last_conn = _last_per_thread(records, "connection_id", records["connection_id"].notna())
    is_rbac = records["logger"].eq("rbac").fillna(False).astype(bool)
    checking = is_rbac & _starting(records["message"], "checking ")
    last_check = _last_per_thread(records, "line_no", checking)
    peers = {line: _rbac_peer(text) for line, text in zip(records["line_no"][checking], records["message"][checking])}

    verdict = records["message"].where(is_rbac).str.extract(_VERDICT)
    rows = verdict["mode"].notna()
    # The network filter by its source file; where the format prints none, by the thread's last "checking ..." line.
    checked_connection = _last_per_thread(records, "message", checking).str.startswith("checking connection")
    by_source = records["source"].str.contains("network/rbac", regex=False).fillna(False).astype(bool)
    by_check = checked_connection.fillna(False).astype(bool)
    network = by_source.where(records["source"].notna(), by_check)
    out = pd.DataFrame(
        {
            "connection_id": last_stream_conn.where(~network, last_conn)[rows].astype("UInt64"),
            "stream_id": last_stream.where(~network)[rows].astype("UInt64"),
            "decision": np.where(
                verdict["mode"][rows] == "shadow", "shadow " + verdict["verdict"][rows], verdict["verdict"][rows]
            ),
            "filter": np.where(network[rows], "network", "http"),
            "timestamp": records["timestamp"][rows],
            "thread": records["thread"][rows],
            "line_no": records["line_no"][rows],
        }
    )
    policies = [None if p != p or p.strip() == "none" else p.strip() for p in verdict["policy"][rows]]
    out.insert(3, "policy", pd.Series(policies, index=out.index, dtype=object))  # object: None, not NaN
    peer = [peers.get(line) if net else None for line, net in zip(last_check[rows], out["filter"] == "network")]
    return _match_network_peers(out, records, peer).reset_index(drop=True)


def _match_network_peers(verdicts: pd.DataFrame, records: pd.DataFrame, peer: list[str | None]) -> pd.DataFrame:
    """Point network verdicts at the latest connection their thread accepted from ``peer``."""
    accepted = records[_starting(records["message"], "new connection from") & records["connection_id"].notna()]
    wanted = np.array([p is not None for p in peer], bool)
    if accepted.empty or not wanted.any():
        return verdicts
    opens = pd.DataFrame(
        {
            "line_no": accepted["line_no"].to_numpy(),
            "thread": accepted["thread"].astype("float64").to_numpy(),
            "peer": [m.split()[-1] for m in accepted["message"]],
            "opened": accepted["connection_id"].to_numpy(),
        }
    )
    left = pd.DataFrame(
        {
            "row": np.flatnonzero(wanted),
            "line_no": verdicts["line_no"].to_numpy()[wanted],
            "thread": verdicts["thread"].astype("float64").to_numpy()[wanted],
            "peer": [p for p in peer if p is not None],
        }
    )
    matched = pd.merge_asof(
        left.sort_values("line_no"), opens.sort_values("line_no"), on="line_no", by=["thread", "peer"]
    )
    matched = matched.dropna(subset=["opened"])
    column = verdicts.columns.get_loc("connection_id")
    verdicts.iloc[matched["row"].to_numpy(), column] = matched["opened"].astype("uint64").to_numpy()
    return verdicts


_STATUS = r"':status'(?:, |:)'(\d+)'"  # "':status', '200'" in a dump; Envoy 1.7 printed "  ':status':'200'"


def _status_records(records: pd.DataFrame, sent: pd.DataFrame) -> pd.Series:
    """Status of each ``sent`` row from the header records after it (Envoy 1.7 logged each header alone).

    The header record must be the next ``:status`` on the same thread and stream: an async
    client's side-stream prints its own ``':status'`` records, without a stream id.
    """
    header = records["message"].str.extract(r"^\s*" + _STATUS, expand=False)
    headers = records[header.notna() & records["stream_id"].notna()]
    wanted = sent[sent["stream_id"].notna()]
    if headers.empty or wanted.empty:
        return pd.Series(None, index=sent.index, dtype=object)
    keys = ["thread", "stream_id"]
    left = pd.DataFrame({"row": wanted.index, "line_no": wanted["line_no"].to_numpy()})
    right = pd.DataFrame({"line_no": headers["line_no"].to_numpy(), "status": header[headers.index].to_numpy()})
    for key in keys:  # as text: stream ids above 2**53 must not meet as floats
        left[key] = wanted[key].astype(str).to_numpy()
        right[key] = headers[key].astype(str).to_numpy()
    found = pd.merge_asof(
        left.sort_values("line_no"),
        right.sort_values("line_no"),
        on="line_no",
        by=keys,
        direction="forward",
        allow_exact_matches=False,
    )
    return found.set_index("row")["status"].reindex(sent.index)


def responses(df: pd.DataFrame) -> pd.DataFrame:
    """One row per response the proxy encoded downstream (``encoding headers via codec``).

    Responses Envoy received from upstream (``upstream headers complete``) are
    not included: they belong to a trace, not to what the client saw.

    df: the output of :func:`parse_envoy_log`.

    Columns: ``connection_id``, ``stream_id``, ``status`` (Int64, from the
    ``':status'`` header in the dump), ``connection_close`` (a
    ``'connection', 'close'`` header was sent), ``timestamp``, ``line_no``.

    Example:
        >>> responses(parse_envoy_log("envoy.log"))["status"].value_counts()
    """
    records = _records(df)
    sent = records[_starting(records["message"], "encoding headers via codec")]
    status = sent["message"].str.extract(_STATUS, expand=False)
    status = status.fillna(_status_records(records, sent))
    return pd.DataFrame(
        {
            "connection_id": sent["connection_id"],
            "stream_id": sent["stream_id"],
            "status": pd.to_numeric(status, errors="coerce").astype("Int64"),
            "connection_close": sent["message"]
            .str.contains("'connection', 'close'", regex=False)
            .fillna(False)
            .astype(bool),
            "timestamp": sent["timestamp"],
            "line_no": sent["line_no"],
        }
    ).reset_index(drop=True)


# How Envoy logs a connection closing, oldest wording still seen first.
_CLOSE_KIND = [
    (r"^remote early close", "remote early close"),
    (r"^remote close", "remote close"),
    (r"^local close", "local close"),
    (r"^closing socket: 0", "remote close"),  # ConnectionEvent::RemoteClose
    (r"^closing socket: 1", "local close"),  # ConnectionEvent::LocalClose
    (r"^closing data_to_write=", "local close"),
]
# Why, where Envoy says so: on the connection's own records (a stream's
# "upstream reset: ... connection failure" is about the stream, not the connection).
_CLOSE_DETAIL = (
    r"^(?:closing connection due to (?P<due>.+)"
    r"|client disconnected, failure reason: (?P<failure>\S.*)"
    r"|(?P<connect>(?:delayed|immediate) connect(?:ion)? error: .*)"
    r"|.*close reason: ?(?P<reason>\S.*)"
    r"|(?P<tls>.*TLS_error:.*))$"
)
_CONNECTION_LOGGERS = ["connection", "conn_handler", "pool", "client", "http", "filter"]
_ATTACHED = r"Attached upstream connection \[C(\d+)\] to downstream connection \[C(\d+)\]"


def _first_per_connection(rows: pd.DataFrame, values: pd.Series) -> pd.Series:
    """connection id -> the first non-null value among that connection's rows."""
    keep = values.notna()
    return values[keep].groupby(rows.loc[keep, "connection_id"]).first()


def _upstream_links(records: pd.DataFrame) -> pd.Series:
    """downstream connection id -> first upstream connection id it used.

    Envoy 1.2x+ logs "Attached upstream connection [C7] to downstream
    connection [C5]" (router and tcp_proxy). Older logs: a router ``pool
    ready`` on the downstream's stream follows, on the same thread, the
    pool's "[C7] creating stream" (or "attaching to next stream", "using
    existing connection"), so the pool's last connection on that thread is it.
    """
    attached = records["message"].str.extract(_ATTACHED).dropna()
    if not attached.empty:
        up, down = attached[0].astype("uint64").to_numpy(), attached[1].astype("uint64").to_numpy()
        return pd.Series(up, index=down).groupby(level=0).first()
    pool = records["logger"].isin(["pool", "client"]).fillna(False).astype(bool) & records["connection_id"].notna()
    last_pool_conn = _last_per_thread(records, "connection_id", pool)
    ready = _starting(records["message"], "pool ready") & records["connection_id"].notna()
    links = pd.DataFrame({"down": records["connection_id"][ready], "up": last_pool_conn[ready]}).dropna()
    links = links[links["down"] != links["up"]]
    return links.groupby("down")["up"].first().astype("uint64")


def _close_reasons(rows: pd.DataFrame) -> pd.DataFrame:
    """connection id -> ``closed`` (first close record's time) and ``close_reason``."""
    messages = rows["message"]
    kind = pd.Series(None, index=messages.index, dtype=object)
    for pattern, name in reversed(_CLOSE_KIND):  # the first pattern in the list wins
        kind[messages.str.contains(pattern).fillna(False).astype(bool)] = name
    found = messages.str.extract(_CLOSE_DETAIL)
    hits = found.notna().any(axis=1) & rows["logger"].isin(_CONNECTION_LOGGERS).fillna(False).astype(bool)
    detail = pd.Series(None, index=messages.index, dtype=object)
    detail[hits] = [next(v for v in row if isinstance(v, str)) for row in found[hits].itertuples(index=False)]
    out = pd.DataFrame(
        {
            "closed": _first_per_connection(rows, rows["timestamp"].where(kind.notna())),
            "kind": _first_per_connection(rows, kind),
            "detail": _first_per_connection(rows, detail),
        }
    )
    parts = out[["kind", "detail"]].astype(object)
    out["close_reason"] = [
        "; ".join(p for p in pair if isinstance(p, str)) or None for pair in parts.itertuples(index=False)
    ]
    return out[["closed", "close_reason"]]


_CONNECTION_COLUMNS = [
    "connection_id",
    "direction",
    "remote_address",
    "opened",
    "closed",
    "close_reason",
    "upstream_connection_id",
    "streams",
    "records",
]


def connections(df: pd.DataFrame) -> pd.DataFrame:
    """One row per connection id: which side, peer, when opened and closed, why, and its upstream.

    ``direction`` is ``downstream`` for connections Envoy accepted ("new
    connection from ..."), ``upstream`` for those it opened ("connecting to
    ...", or named as upstream in "Attached upstream connection").
    ``remote_address`` is the peer from either message. ``closed`` is the
    first close record ("remote close", "closing data_to_write=...",
    "closing socket: N", ...); ``close_reason`` is that kind of close, then
    Envoy's own words when it gave them on the connection's records
    ("closing connection due to ...", "failure reason: ...", "delayed
    connect error: ..."). ``upstream_connection_id`` is the first upstream a
    downstream used (see :func:`_upstream_links`). ``streams`` and
    ``records`` count what the connection logged.

    df: the output of :func:`parse_envoy_log`.

    Example:
        >>> connections(parse_envoy_log("envoy.log"))[["connection_id", "remote_address", "close_reason"]]
    """
    records = _records(df)
    rows = records[records["connection_id"].notna()]
    if rows.empty:
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in _CONNECTION_COLUMNS})
        return empty.astype(
            {
                "connection_id": "UInt64",
                "upstream_connection_id": "UInt64",
                "opened": "datetime64[ns]",
                "closed": "datetime64[ns]",
                "streams": "int64",
                "records": "int64",
            }
        )
    messages = rows["message"]
    groups = rows.groupby("connection_id", sort=True)
    out = pd.DataFrame(
        {"opened": groups["timestamp"].first(), "records": groups.size(), "streams": groups["stream_id"].nunique()}
    )
    out.index = out.index.astype("uint64")

    accepted = _starting(messages, "new connection")  # older releases print no peer
    peer = messages.str.extract(r"^(?:new connection from|connecting to) (\S+)", expand=False)
    dialed = _starting(messages, "connecting to ")
    links = _upstream_links(records)
    upstream = set(links.tolist()) | set(rows.loc[dialed, "connection_id"].astype("uint64").tolist())
    downstream = set(rows.loc[accepted, "connection_id"].astype("uint64").tolist())
    out["direction"] = [
        "downstream" if c in downstream else "upstream" if c in upstream else None for c in out.index.tolist()
    ]
    out["remote_address"] = _first_per_connection(rows, peer)
    out = out.join(_close_reasons(rows))
    out["upstream_connection_id"] = links.reindex(out.index).astype("UInt64")
    out = out.rename_axis("connection_id").reset_index()
    out["connection_id"] = out["connection_id"].astype("UInt64")
    return out[_CONNECTION_COLUMNS]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """A one-column table a notebook can show: what the log holds at a glance.

    Rows: records, unparsed lines, first/last timestamp, span in seconds,
    records per level, connections, streams, RBAC verdicts per decision, and
    downstream responses per status.

    df: the output of :func:`parse_envoy_log`.

    Example:
        >>> summary(parse_envoy_log("envoy.log")).loc["rbac denied", "value"]
    """
    records = _records(df)
    items: list[tuple[str, Any]] = [
        ("records", len(records)),
        ("unparsed lines", int(df.attrs.get("unparsed", len(df) - len(records)))),
        ("first", records["timestamp"].min()),
        ("last", records["timestamp"].max()),
        ("span_s", (records["timestamp"].max() - records["timestamp"].min()).total_seconds() if len(records) else 0.0),
    ]
    items += [(f"level {level}", int(n)) for level, n in records["level"].value_counts().items()]
    items += [
        ("connections", int(records["connection_id"].nunique())),
        ("streams", int(records["stream_id"].nunique())),
    ]
    verdicts = rbac_decisions(df)["decision"].value_counts()
    items += [
        (f"rbac {decision}", int(verdicts.get(decision, 0)))
        for decision in ("allowed", "denied", "shadow allowed", "shadow denied")
    ]
    statuses = responses(df)["status"].value_counts().sort_index()
    items += [(f"responses {status}", int(n)) for status, n in statuses.items()]
    values = np.empty(len(items), dtype=object)
    values[:] = [v for _, v in items]
    return pd.DataFrame({"value": values}, index=pd.Index([k for k, _ in items], name="item"))


# ---------------------------------------------------------------- access log

_ACCESS_IDS = ("connection_id", "upstream_connection_id")
_ACCESS_INTS = ("response_code", "duration_ms", "bytes_received", "bytes_sent")


def _read_all(source: Source) -> bytes:
    chunks = []
    with _binary(source) as stream:
        while chunk := stream.read(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_access_log(source: Source) -> pd.DataFrame:
    """Envoy JSON access-log lines (keys of :data:`ACCESS_LOG_FORMAT`) as a DataFrame.

    Lines that are not a JSON object are skipped and counted in
    ``df.attrs["unparsed"]``. ``start_time`` becomes datetime64[ns] (UTC,
    naive), ids UInt64, codes, durations and byte counts Int64, the rest text
    as printed. ``upstream_connection_id`` is null when no upstream was used
    (Envoy prints 0 then, and 0 is also a real connection id).

    source: as for :func:`parse_envoy_log`.

    Example:
        >>> parse_access_log("access.log")[["authority", "response_code", "response_code_details"]]
    """
    rows, line_nos, unparsed = [], [], 0
    for number, line in enumerate(_read_all(source).decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            unparsed += 1
            continue
        rows.append(obj)
        line_nos.append(number)
    extra = sorted({k for row in rows for k in row} - set(ACCESS_LOG_FORMAT))
    columns = list(ACCESS_LOG_FORMAT) + extra
    df = (
        pd.DataFrame.from_records(rows, columns=columns)
        if rows
        else pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    )
    df["start_time"] = (
        pd.to_datetime(df["start_time"], errors="coerce", utc=True, format="ISO8601")
        .dt.tz_convert(None)
        .astype("datetime64[ns]")
    )
    for name in _ACCESS_IDS:
        df[name] = pd.array([_to_uint(v) if v is not None else None for v in df[name]], dtype="UInt64")
    no_upstream = df["upstream_host"].isna() & df["upstream_connection_id"].eq(0).fillna(False)
    df.loc[no_upstream, "upstream_connection_id"] = pd.NA
    for name in _ACCESS_INTS:
        df[name] = pd.to_numeric(df[name], errors="coerce").astype("Int64")
    for name in set(ACCESS_LOG_FORMAT) - {"start_time", *_ACCESS_IDS, *_ACCESS_INTS}:
        df[name] = df[name].astype(_TEXT)
    df["line_no"] = pd.Series(line_nos, dtype="int64")
    df.attrs["unparsed"] = unparsed
    return df
