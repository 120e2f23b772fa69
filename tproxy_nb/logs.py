"""Envoy logs as pandas DataFrames: records, RBAC verdicts, responses, connections.

Envoy writes one *record* per log call. The record's first line starts with a
header (timestamp, thread, level, logger and, where the format prints it, the
source line); the message may go on over more lines (header dumps). These
header formats are read, also mixed in one file:

* Envoy's default ``[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v``, connection and
  stream ids as ``[Tags: "ConnectionId":"5","StreamId":"..."]`` (1.3x and later)
  or ``[C5][S...]`` (older releases);
* Istio's ``%Y-%m-%dT%T.%fZ\\t%l\\tenvoy %n %g:%#\\t%v\\tthread=%t``;
* JSON application logs (``application_log_config.log_format.json_format``),
  one object a line, with keys such as ``timestamp``, ``thread``, ``level``,
  ``logger``, ``source``, ``message``, ``ConnectionId``, ``StreamId``.

Conventions, from how Envoy logs:

* A record line carries the full header of its format. Other lines continue
  the record before them (bracket and Istio formats; a JSON record is one line).
* Not records, and not continuations either: lines before the first record,
  lines that start like some program's log line (``[2026-``, ``2026-11-26``,
  ``{``) without a full Envoy header, and the lines that follow such a line.
  They are kept as rows whose ``level`` (and ``timestamp``) is null, with the
  raw line in ``message``; ``df.attrs["unparsed"]`` counts them. Blank lines
  outside records are dropped.
* Bad bytes are decoded with U+FFFD; nothing in the input raises.

Speed: Envoy's default format is read with numpy over 4 MiB blocks (a few
array passes per field, no Python per line); other formats take one regex or
``json.loads`` per record line. bench/bench_logs.py measures it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple, Union

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

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

#: Columns of :func:`parse_envoy_log`, in order.
COLUMNS = ("timestamp", "thread", "level", "logger", "source", "connection_id", "stream_id", "message", "line_no")

#: The access log's ``json_format``: key -> Envoy command operator. The config
#: templates render exactly this; :func:`parse_access_log` reads it back.
ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "connection_id": "%CONNECTION_ID%",
    "upstream_connection_id": "%UPSTREAM_CONNECTION_ID%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "upstream_host": "%UPSTREAM_HOST%",
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}

Source = Union[str, bytes, bytearray, memoryview, os.PathLike, BinaryIO, io.TextIOBase]

# pandas >= 3 stores text as its "str" dtype, pandas 2 as object: use whichever
# this pandas gives plain strings, so empty and full frames agree.
_TEXT = pd.Series(["x"]).dtype

# ---------------------------------------------------------------- input

_BLOCK = 1 << 22  # bytes read at a time; a record never straddles two blocks
_PAD = 64  # slack around a block, so fixed-width windows never leave the array

# Where some program's log line (or an Envoy header) may start: a record is
# never split there and a continuation never runs past it.
_LOG_LINE_START = rb"\[\d{4}-|\d{4}-\d\d-\d\d|\{"
_BOUNDARY = re.compile(rb"\n(?=" + _LOG_LINE_START + rb")")


def _is_existing_path(text: str) -> bool:
    return "\n" not in text and os.path.isfile(text)


class _ReadAdapter:
    """``readinto`` over any object with ``read``; text is encoded as UTF-8."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = b""

    def readinto(self, target: memoryview) -> int:
        if not self._pending:
            data = self._stream.read(len(target))
            if isinstance(data, str):
                data = data.encode("utf-8", "replace")
            self._pending = bytes(data or b"")
        n = min(len(target), len(self._pending))
        target[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@contextlib.contextmanager
def _binary(source: Source) -> Iterator[Any]:
    """Open ``source`` as something with ``readinto``.

    A ``str`` is a path when it names an existing file and has no newline;
    any other ``str`` is log text. ``bytes`` are log content. Paths
    (``pathlib.Path``) must exist. File objects may be text or binary.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and _is_existing_path(source)):
        with open(source, "rb") as f:
            yield f
    elif isinstance(source, str):
        yield io.BytesIO(source.encode("utf-8", "replace"))
    elif hasattr(source, "read"):
        binary = not isinstance(source, io.TextIOBase) and hasattr(source, "readinto")
        yield source if binary else _ReadAdapter(source)
    else:
        raise TypeError(f"parse a path, str, bytes or file object, not {type(source).__name__}")


def _last_boundary(view: memoryview) -> int:
    """Offset of the last line that may start a record, 0 when there is none past the first."""
    for start in (max(0, len(view) - (1 << 20)), 0):
        last = None
        for last in _BOUNDARY.finditer(view, start):
            pass
        if last is not None:
            return last.start() + 1
        if start == 0:
            break
    return 0


def _blocks(stream: Any, size: int = 0) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(buf, n)``: ``buf[_PAD:_PAD + n]`` holds whole records and ends with a newline.

    One buffer is reused (read with ``readinto``, no copies); it grows only
    when a single record is longer than it.
    """
    size = size or _BLOCK
    buf = np.zeros(size + 2 * _PAD + 1, np.uint8)
    filled, eof = 0, False
    while True:
        while not eof and filled < size:
            got = stream.readinto(memoryview(buf)[_PAD + filled : _PAD + size])
            eof = not got
            filled += got or 0
        if filled == 0:
            return
        if eof:
            if buf[_PAD + filled - 1] != 10:
                buf[_PAD + filled] = 10
                filled += 1
            yield buf, filled
            return
        cut = _last_boundary(memoryview(buf)[_PAD : _PAD + filled])
        if cut == 0:
            size *= 2
            bigger = np.zeros(size + 2 * _PAD + 1, np.uint8)
            bigger[: len(buf)] = buf
            buf = bigger
            continue
        yield buf, cut
        rest = filled - cut
        buf[_PAD : _PAD + rest] = buf[_PAD + cut : _PAD + filled].copy()
        filled = rest


# ---------------------------------------------------------------- numpy helpers
#
# Every helper takes the block's bytes (``data``) and an array of positions,
# and answers for all positions at once. Byte patterns are strings where "0"
# stands for any digit, "?" for any byte, and anything else for itself.


def _window(data: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """``data[p:p + width]`` for every p, as a (len(pos), width) array."""
    return sliding_window_view(data, width)[pos]


def _pattern(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(lowest byte, allowed range) per column, padded with "?" to a multiple of 8 columns."""
    text = text.ljust(-(-len(text) // 8) * 8, "?")
    low = np.array([0 if c == "?" else ord("0") if c == "0" else ord(c) for c in text], np.uint8)
    span = np.array([255 if c == "?" else 9 if c == "0" else 0 for c in text], np.uint8)
    return low, span


def _any_per_row(flags: np.ndarray) -> np.ndarray:
    """Row-wise any() of a C-contiguous bool array with a multiple of 8 columns.

    Eight flags at a time as uint64 words: numpy's own any(axis=1) is slow for
    short rows.
    """
    words = flags.view(np.uint64)
    out = words[:, 0].copy()
    for column in words.T[1:]:
        out |= column
    return out != 0


def _matches(window: np.ndarray, pattern: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rows of ``window`` (as wide as the pattern) that fit the pattern."""
    low, span = pattern
    return ~_any_per_row((window - low) > span)  # uint8 wraps: below ``low`` becomes large


def _at(data: np.ndarray, pos: np.ndarray, pattern: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Positions where ``data`` continues with the pattern."""
    return _matches(_window(data, pos, len(pattern[0])), pattern)


_POW10 = 10.0 ** np.arange(9, -1, -1)
_COL24 = np.arange(24)


def _number_before(data: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The run of decimal digits that ends just before each ``end``: (uint64 value, digit count).

    The count is 0 when there is no digit there or more than 20 of them.
    Ten digits at a time through a float64 dot product: exact, as every
    partial sum stays below 2**53.
    """
    digits = _window(data, end - 24, 24) - np.uint8(48)
    # Digits counted from the end; argmax finds the first other byte (0 if there is none).
    count = np.argmax(digits[:, ::-1] > 9, axis=1)  # uint8 wraps: bytes below "0" become large
    count = np.where(count <= 20, count, 0)
    digits *= _COL24 >= (24 - count)[:, None]
    tens = digits[:, 4:].astype(np.float64)
    high, low = (tens[:, :10] @ _POW10).astype(np.uint64), (tens[:, 10:] @ _POW10).astype(np.uint64)
    return high * np.uint64(10**10) + low, count


# The default header's timestamp, then the place value of each of its digits
# in year, month, day, hour, minute, second and millisecond.
_TS_PATTERN = _pattern("[0000-00-00 00:00:00.000][")
_TS_PLACES = np.zeros((24, 7), np.float32)  # every field is below 2**24: float32 is exact
for _field, _cols in enumerate([(1, 2, 3, 4), (6, 7), (9, 10), (12, 13), (15, 16), (18, 19), (21, 22, 23)]):
    _TS_PLACES[list(_cols), _field] = 10 ** np.arange(len(_cols) - 1, -1, -1)
_TS_IS_DIGIT = _TS_PLACES.any(axis=1)
# Days from 1970-01-01 to the first of each month, 1970 to 2199.
_MONTH_DAYS = np.arange(12 * 230).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _default_timestamps(data: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since the epoch from ``[YYYY-MM-DD HH:MM:SS.mmm][`` at ``start``, and validity."""
    window = _window(data, start, len(_TS_PATTERN[0]))
    ok = _matches(window, _TS_PATTERN)
    digits = ((window[:, :24] - np.uint8(48)) * _TS_IS_DIGIT).astype(np.float32)
    year, month, day, hour, minute, second, milli = (digits @ _TS_PLACES).astype(np.int64).T
    month_index = (year - 1970) * 12 + month - 1
    ok &= (month_index >= 0) & (month_index < len(_MONTH_DAYS)) & (month >= 1) & (month <= 12)
    ok &= (day >= 1) & (day <= 31) & (hour < 24) & (minute < 60) & (second < 61)
    days = _MONTH_DAYS[np.where(ok, month_index, 0)] + day - 1
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    return (seconds * 1000 + milli) * 1_000_000, ok


def _first_occurrence(codes: np.ndarray) -> np.ndarray:
    """Row of each code's first use, for codes numbered in order of first appearance."""
    if not codes.size:
        return codes
    running = np.maximum.accumulate(codes)
    return np.flatnonzero(np.r_[True, running[1:] > running[:-1]])


_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


def _span_words(data: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """Spans of one ``width`` as rows of uint64 words, bytes past ``width`` zeroed."""
    win = _window(data, start, -(-width // 8) * 8)
    win[:, width:] = 0
    return win.view(np.uint64)


def _factorize_spans(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct byte strings ``data[start:end]``: ``(codes, first row of each code)``.

    Exact: a multiplicative hash of each span's 8-byte words groups them, then
    every span is compared with the first of its group; a hash collision (never
    seen, but possible) falls back to hashing Python bytes.
    """
    length = end - start
    order = np.argsort(length, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(length[order])) + 1)
    hashes = np.empty(len(start), np.uint64)
    words_by_group = []
    for rows in groups:
        if not rows.size:
            continue
        words = _span_words(data, start[rows], int(length[rows[0]]))
        h = np.full(len(rows), np.uint64(length[rows[0]]))
        for column in words.T:
            h = (h ^ column) * _HASH_MULT
        hashes[rows] = h
        words_by_group.append((rows, words))
    codes = pd.factorize(hashes)[0]
    first = _first_occurrence(codes)
    for rows, words in words_by_group:
        reps = first[codes[rows]]
        same_length = np.array_equal(length[reps], length[rows])
        if not (same_length and np.array_equal(_span_words(data, start[reps], int(length[rows[0]])), words)):
            spans = [data[a:b].tobytes() for a, b in zip(start.tolist(), end.tolist())]
            codes = pd.factorize(pd.Series(spans, dtype=object))[0]
            return codes, _first_occurrence(codes)
    return codes, first


# ---------------------------------------------------------------- ids and headers

_ANY_TAGS = _pattern("[Tags: ")
_TAGS = _pattern('[Tags: "ConnectionId":"')
_STREAM_TAG = _pattern(',"StreamId":"')
_OLD_CONN = _pattern("[C0")
_OLD_STREAM = _pattern("[S0")


class _Ids(NamedTuple):
    connection: np.ndarray  # uint64
    has_connection: np.ndarray
    stream: np.ndarray
    has_stream: np.ndarray
    message: np.ndarray  # where the message starts, after the ids
    ok: np.ndarray  # False: an unusual [Tags: ...] that the slow path must read


def _ids(data: np.ndarray, pos: np.ndarray, end: np.ndarray, closes: np.ndarray) -> _Ids:
    """Connection and stream ids printed at ``pos``: ``[Tags: ...]`` or ``[C5][S6]``.

    Both forms are read from the back: the first "]" after ``pos`` closes the
    ids, and the numbers are the digits right before a quote or bracket.
    """
    n = len(pos)
    ids = _Ids(np.zeros(n, np.uint64), np.zeros(n, bool), np.zeros(n, np.uint64), np.zeros(n, bool), pos.copy(), np.ones(n, bool))
    k = np.searchsorted(closes, pos)
    first_close, second_close = closes[k], closes[k + 1]
    ids.ok[_at(data, pos, _ANY_TAGS)] = False  # other tags, or another order: the slow path reads them

    rows = np.flatnonzero(_at(data, pos, _TAGS))
    if rows.size:
        close = first_close[rows]  # [Tags: "ConnectionId":"5"]  or  ...,"StreamId":"6"]
        last, count = _number_before(data, close - 1)
        stream_tag = close - 1 - count - 13
        has_stream = _at(data, stream_tag, _STREAM_TAG) & (count > 0)
        conn, conn_count, conn_end = last.copy(), count.copy(), close - 1
        both = np.flatnonzero(has_stream)
        conn_end[both] = stream_tag[both] - 1  # the quote that closes the connection id
        conn[both], conn_count[both] = _number_before(data, conn_end[both])
        good = (conn_count > 0) & (conn_end - conn_count == pos[rows] + 23) & (close < end[rows])
        good &= data[close - 1] == ord('"')
        ids.ok[rows] = good
        ids.connection[rows], ids.has_connection[rows] = conn, good
        ids.stream[rows], ids.has_stream[rows] = last, good & has_stream
        ids.message[rows] = np.where(good, close + 1 + (data[close + 1] == ord(" ")), pos[rows])

    rows = np.flatnonzero(_at(data, pos, _OLD_CONN))
    if rows.size:
        c_close, s_close = first_close[rows], second_close[rows]
        conn, count = _number_before(data, c_close)
        conn_ok = (count > 0) & (c_close - count == pos[rows] + 2) & (c_close < end[rows])
        stream, count = _number_before(data, s_close)
        stream_ok = conn_ok & _at(data, c_close + 1, _OLD_STREAM) & (s_close - count == c_close + 3) & (s_close < end[rows])
        close = np.where(stream_ok, s_close, c_close)
        ids.connection[rows], ids.has_connection[rows] = conn, conn_ok
        ids.stream[rows], ids.has_stream[rows] = stream, stream_ok
        ids.message[rows] = np.where(conn_ok, close + 1 + (data[close + 1] == ord(" ")), pos[rows])
    return ids


class _Default(NamedTuple):
    ok: np.ndarray
    ns: np.ndarray
    key_start: np.ndarray  # "1234][debug][http] [source/...:393" spans: thread to source
    key_end: np.ndarray
    ids: _Ids


def _default_headers(data: np.ndarray, start: np.ndarray, end: np.ndarray, closes: np.ndarray) -> _Default:
    """Read Envoy's default header at each line start, vectorised.

    ``ok`` is False where the line is not laid out like the default format
    with millisecond timestamps; those lines go to the slow path. The thread,
    level, logger and source are checked later, once per distinct span.
    """
    ns, ok = _default_timestamps(data, start)
    # The 5th ']' from the timestamp's closes the source: "][thread][level][logger] [source]".
    key_end = closes[np.searchsorted(closes, start + 24) + 4]
    ok &= key_end < end
    ok &= (data[key_end + 1] == ord(" ")) | (key_end + 1 == end)
    ids = _ids(data, np.minimum(key_end + 2, end), end, closes)
    return _Default(ok & ids.ok, ns, start + 26, key_end, ids)


_KEY = re.compile(r"(\d+)\]\[(\w+)\]\[([\w.\-]+)\] \[([^\]]*:\d+)")
_TS_TEXT = rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?"
_BRACKET = re.compile(rb"\[(" + _TS_TEXT + rb")\]\[(\d+)\]\[(\w+)\]\[([\w.\-]+)\] \[([^\]\n]*:\d+)\](?: |$)")
_ISTIO = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z?\t(\w+)\tenvoy ([\w.\-]+)(?: ([^\t\n]*:\d+))?\t")
_IDS_TEXT = r'\[Tags: ([^\]\n]*)\] ?|\[C(\d+)\](?:\[S(\d+)\])? ?'
_IDS_B = re.compile(_IDS_TEXT.encode())
_IDS_S = re.compile(_IDS_TEXT)
_TAG_PAIR = re.compile(r'"(\w+)":"?([^",]*)"?')


class _Slow(NamedTuple):
    """One record line read by regex or json (the formats the numpy path does not cover)."""

    timestamp: str
    thread: int | None
    level: str
    logger: str
    source: str | None
    connection: int | None
    stream: int | None
    message_at: int  # byte offset of the message in the line; -1 for JSON
    message: str | None  # JSON only: the whole message
    istio: bool  # the thread is printed after the message


def _to_uint(value: Any) -> int | None:
    text = str(value).strip()
    return int(text) if text.isdigit() and int(text) < 2**64 else None


def _ids_in(match: re.Match | None) -> tuple[int | None, int | None]:
    if match is None:
        return None, None
    tags, conn, stream = (g.decode() if isinstance(g, bytes) else g for g in match.groups())
    if tags is not None:
        pairs = dict(_TAG_PAIR.findall(tags))
        return _to_uint(pairs.get("ConnectionId", "")), _to_uint(pairs.get("StreamId", ""))
    return _to_uint(conn), (_to_uint(stream) if stream else None)


def _slow_bracket_or_istio(line: bytes) -> _Slow | None:
    m = _BRACKET.match(line)
    if m:
        ts, thread, level, logger, source = (g.decode() for g in m.groups())
        istio = False
    else:
        m = _ISTIO.match(line)
        if not m:
            return None
        ts, level, logger, source = (g.decode() if g is not None else None for g in m.groups())
        thread, istio = None, True
    ids = _IDS_B.match(line, m.end())
    conn, stream = _ids_in(ids)
    at = ids.end() if ids and conn is not None else m.end()
    return _Slow(ts, int(thread) if thread else None, level, logger, source, conn, stream, at, None, istio)


def _slow_json(line: bytes) -> _Slow | None:
    try:
        obj = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    ts, level, logger = obj.get("timestamp", obj.get("time")), obj.get("level"), obj.get("logger", obj.get("name"))
    if not all(isinstance(v, str) and v for v in (ts, level, logger)):
        return None
    source = obj.get("source")
    if source is None and obj.get("file") is not None:
        source = f"{obj['file']}:{obj.get('line', '')}".rstrip(":")
    message = str(obj.get("message", obj.get("msg", ""))).rstrip("\n")
    conn, stream = _to_uint(obj.get("ConnectionId", "")), _to_uint(obj.get("StreamId", ""))
    if conn is None and stream is None:
        ids = _IDS_S.match(message)
        conn, stream = _ids_in(ids)
        if ids and conn is not None:
            message = message[ids.end() :]
    thread = _to_uint(obj.get("thread", ""))
    return _Slow(ts, thread, level, logger, None if source is None else str(source), conn, stream, -1, message, False)


def _slow(line: bytes) -> _Slow | None:
    """The header of a line the numpy path did not read, or None when it is no record."""
    return _slow_json(line) if line[:1] == b"{" else _slow_bracket_or_istio(line)


# ---------------------------------------------------------------- per block


class _Headers:
    """Distinct (thread, level, logger, source) tuples, numbered in order of first sight."""

    def __init__(self) -> None:
        self.code: dict[tuple, int] = {}
        self.rows: list[tuple] = []

    def number(self, header: tuple) -> int:
        code = self.code.get(header)
        if code is None:
            code = self.code[header] = len(self.rows)
            self.rows.append(header)
        return code

    def columns(self, codes: np.ndarray) -> dict[str, Any]:
        """thread, level, logger and source columns for header ``codes`` (-1: none)."""
        rows = self.rows + [(None, None, None, None)]
        codes = np.where(codes < 0, len(self.rows), codes)
        threads = np.array([t if t is not None else -1 for t, *_ in rows], np.int64)[codes]
        out: dict[str, Any] = {"thread": pd.arrays.IntegerArray(threads, threads < 0)}
        for i, name in enumerate(("level", "logger", "source"), start=1):
            out[name] = np.array([r[i] for r in rows], dtype=object)[codes]
        return out


# What a line is, for ownership of the continuation lines that follow it.
_CONTINUATION, _OWNER, _SINGLE, _ORPHAN = 0, 1, 2, 3

_BRACKET_START = _pattern("[0000-")
_DATE_START = _pattern("0000-00-00")


def _starts_like_log_line(data: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts with ``[dddd-``, starts with ``[dddd-`` or ``dddd-dd-dd`` or ``{``)."""
    first = data[s]
    bracket = np.zeros(len(s), bool)
    rows = np.flatnonzero(first == ord("["))
    bracket[rows] = _at(data, s[rows], _BRACKET_START)
    date = np.zeros(len(s), bool)
    rows = np.flatnonzero((first - np.uint8(48)) <= 9)
    date[rows] = _at(data, s[rows], _DATE_START)
    return bracket, bracket | date | (first == ord("{"))


class _Block:
    """One block's lines and, per line, what the readers found (arrays, one slot a line)."""

    def __init__(self, buf: np.ndarray, n: int) -> None:
        self.data = buf[: _PAD + n + _PAD]
        self.body = self.data[_PAD : _PAD + n]
        self.ends = np.flatnonzero(self.body == 10) + _PAD  # each line's "\n"
        self.starts = np.empty_like(self.ends)
        self.starts[0], self.starts[1:] = _PAD, self.ends[:-1] + 1
        count = len(self.starts)
        self.kind = np.full(count, _CONTINUATION, np.int8)
        self.ns = np.full(count, np.iinfo(np.int64).min, np.int64)  # NaT
        self.header = np.full(count, -1, np.int64)  # code in _Headers
        self.conn, self.has_conn = np.zeros(count, np.uint64), np.zeros(count, bool)
        self.stream, self.has_stream = np.zeros(count, np.uint64), np.zeros(count, bool)
        self.message_at = np.full(count, -1, np.int64)  # where a record's message starts
        self.message = np.full(count, None, dtype=object)


def _read_default_headers(block: _Block, lines: np.ndarray, headers: _Headers) -> None:
    """Fill in the lines with Envoy's default header, vectorised; leave the rest alone."""
    data = block.data
    # Sentinels mean "no more ]": past every line, yet inside the padding.
    closes = np.r_[np.flatnonzero(block.body == ord("]")) + _PAD, np.full(8, len(block.body) + _PAD + 24)]
    d = _default_headers(data, block.starts[lines], block.ends[lines], closes)
    lines, keep = lines[d.ok], np.flatnonzero(d.ok)
    if not lines.size:
        return
    key_start, key_end = d.key_start[keep], d.key_end[keep]
    span_codes, first = _factorize_spans(data, key_start, key_end)
    # Each distinct "thread][level][logger] [source" is checked and numbered once.
    codes = np.full(len(first), -1, np.int64)
    for i, row in enumerate(first.tolist()):
        m = _KEY.fullmatch(data[key_start[row] : key_end[row]].tobytes().decode("utf-8", "replace"))
        if m:
            codes[i] = headers.number((int(m[1]), m[2], m[3], m[4]))
    code_of_line = codes[span_codes]
    read = code_of_line >= 0  # the rest fall through to the slow path
    lines, keep = lines[read], keep[read]
    block.kind[lines] = _OWNER
    block.header[lines] = code_of_line[read]
    block.ns[lines] = d.ns[keep]
    block.conn[lines], block.has_conn[lines] = d.ids.connection[keep], d.ids.has_connection[keep]
    block.stream[lines], block.has_stream[lines] = d.ids.stream[keep], d.ids.has_stream[keep]
    block.message_at[lines] = d.ids.message[keep]


def _read_other_headers(block: _Block, lines: np.ndarray, headers: _Headers) -> list[tuple[int, _Slow]]:
    """Fill in the given lines with one regex or ``json.loads`` each; return the Istio ones.

    Istio records get their header number later, as their thread is printed
    after the message.
    """
    istio, found, stamps = [], [], []
    for i in lines.tolist():
        rec = _slow(block.data[block.starts[i] : block.ends[i]].tobytes())
        if rec is None:
            continue
        found.append(i)
        stamps.append(rec.timestamp.rstrip("Z").replace(",", "."))
        block.has_conn[i], block.has_stream[i] = rec.connection is not None, rec.stream is not None
        block.conn[i], block.stream[i] = rec.connection or 0, rec.stream or 0
        if rec.message is not None:
            block.kind[i], block.message[i] = _SINGLE, rec.message
        else:
            block.kind[i], block.message_at[i] = _OWNER, block.starts[i] + rec.message_at
        if rec.istio:
            istio.append((i, rec))
        else:
            block.header[i] = headers.number((rec.thread, rec.level, rec.logger, rec.source))
    if found:
        parsed = pd.to_datetime(pd.Series(stamps, dtype=object), format="ISO8601", errors="coerce", utc=True)
        block.ns[found] = parsed.dt.tz_convert(None).to_numpy("datetime64[ns]").view(np.int64)
    return istio


def _fold_continuations(block: _Block) -> np.ndarray:
    """Give every record its message, continuation lines included; return the orphan mask.

    A continuation line belongs to the last record line above it, if that
    record may own continuations; otherwise it is an orphan too. A record ends
    with its last non-blank line (header dumps end in a blank one).
    """
    kind, count = block.kind, len(block.kind)
    blank = block.starts == block.ends
    above = np.maximum.accumulate(np.where(kind != _CONTINUATION, np.arange(count), -1))
    owner_kind = np.where(above >= 0, kind[np.maximum(above, 0)], _ORPHAN)
    continues = (kind == _CONTINUATION) & (owner_kind == _OWNER)
    orphan = ((kind == _ORPHAN) | ((kind == _CONTINUATION) & ~continues)) & ~blank

    members = np.flatnonzero(((kind == _OWNER) | continues) & ~blank)
    group = above[members]
    last = np.ones(len(group), bool)
    last[:-1] = group[1:] != group[:-1]
    owners, owner_end = group[last], block.ends[members[last]]

    text = _decoder(block.body)
    block.message[owners] = text(block.message_at[owners] - _PAD, owner_end - _PAD)
    lone = np.flatnonzero(orphan)
    block.message[lone] = text(block.starts[lone] - _PAD, block.ends[lone] - _PAD)
    return orphan


def _finish_istio(block: _Block, istio: list[tuple[int, _Slow]], headers: _Headers) -> None:
    """Move Istio's trailing ``\tthread=N`` from the message into the header."""
    for i, rec in istio:
        head, sep, tail = block.message[i].rpartition("\tthread=")
        thread = int(tail) if sep and tail.strip().isdigit() else None
        if thread is not None:
            block.message[i] = head.rstrip("\n")  # the thread follows the dump's blank line
        block.header[i] = headers.number((thread, rec.level, rec.logger, rec.source))


def _parse_block(buf: np.ndarray, n: int, first_line: int, headers: _Headers) -> dict[str, Any]:
    """Rows (in line order) for the whole lines in ``buf[_PAD:_PAD + n]``."""
    block = _Block(buf, n)
    bracket, log_like = _starts_like_log_line(block.data, block.starts)
    block.kind[log_like] = _ORPHAN  # until a header is read
    _read_default_headers(block, np.flatnonzero(bracket), headers)
    istio = _read_other_headers(block, np.flatnonzero(log_like & (block.kind != _OWNER)), headers)
    orphan = _fold_continuations(block)
    _finish_istio(block, istio, headers)
    rows = np.flatnonzero((block.kind == _OWNER) | (block.kind == _SINGLE) | orphan)
    return {
        "ns": block.ns[rows],
        "header": block.header[rows],
        "conn": block.conn[rows],
        "has_conn": block.has_conn[rows],
        "stream": block.stream[rows],
        "has_stream": block.has_stream[rows],
        "message": block.message[rows],
        "line_no": rows + first_line,
        "unparsed": int(np.count_nonzero(orphan)),
        "lines": len(block.starts),
    }


def _decoder(body: np.ndarray):
    """A function (starts, ends) -> list of str slices of ``body``, bad bytes as U+FFFD."""
    try:
        text = str(body, "ascii")  # the common case: offsets in bytes are offsets in text
    except UnicodeDecodeError:
        raw = body.tobytes()
        return lambda a, b: [raw[i:j].decode("utf-8", "replace") for i, j in zip(a.tolist(), b.tolist())]
    return lambda a, b: list(map(text.__getitem__, map(slice, a.tolist(), b.tolist())))


# ---------------------------------------------------------------- public


def _empty_log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.Series([], dtype="datetime64[ns]"),
            "thread": pd.Series([], dtype="Int64"),
            "level": pd.Series([], dtype=_TEXT),
            "logger": pd.Series([], dtype=_TEXT),
            "source": pd.Series([], dtype=_TEXT),
            "connection_id": pd.Series([], dtype="UInt64"),
            "stream_id": pd.Series([], dtype="UInt64"),
            "message": pd.Series([], dtype=_TEXT),
            "line_no": pd.Series([], dtype="int64"),
        }
    )


def parse_envoy_log(source: Source) -> pd.DataFrame:
    """Envoy debug-log records as a DataFrame, one row per record (see the module doc).

    source: a path (``str`` naming an existing file, or ``pathlib.Path``, which
        must exist), log text (any other ``str``), ``bytes``, or a text or
        binary file object.

    Columns: ``timestamp`` (datetime64[ns], as printed), ``thread`` (Int64),
    ``level``, ``logger``, ``source`` (file:line), ``connection_id`` and
    ``stream_id`` (UInt64), ``message`` (continuation lines joined with "\\n",
    without the id prefix), ``line_no`` (1-based first line). Lines that are
    no record have a null ``level``; ``df.attrs["unparsed"]`` counts them.

    Example:
        >>> df = parse_envoy_log('[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] [Tags: "ConnectionId":"5"] new stream')
        >>> df.loc[0, "logger"], int(df.loc[0, "connection_id"]), df.loc[0, "message"]
        ('http', 5, 'new stream')
    """
    headers = _Headers()
    parts, line, unparsed = [], 1, 0
    with _binary(source) as stream:
        for buf, n in _blocks(stream):
            part = _parse_block(buf, n, line, headers)
            line += part["lines"]
            unparsed += part["unparsed"]
            parts.append(part)
    if not parts:
        df = _empty_log()
        df.attrs["unparsed"] = 0
        return df

    def joined(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    low_card = headers.columns(joined("header"))
    df = pd.DataFrame(
        {
            "timestamp": joined("ns").view("datetime64[ns]"),
            "thread": low_card["thread"],
            "level": pd.array(low_card["level"], dtype=_TEXT),
            "logger": pd.array(low_card["logger"], dtype=_TEXT),
            "source": pd.array(low_card["source"], dtype=_TEXT),
            "connection_id": pd.arrays.IntegerArray(joined("conn"), ~joined("has_conn")),
            "stream_id": pd.arrays.IntegerArray(joined("stream"), ~joined("has_stream")),
            "message": pd.array(joined("message"), dtype=_TEXT),
            "line_no": joined("line_no").astype(np.int64),
        }
    )
    df.attrs["unparsed"] = unparsed
    return df


# ---------------------------------------------------------------- analysis


def _records(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that are Envoy records (non-record lines have no level)."""
    return df[df["level"].notna()]


def _starting(messages: pd.Series, prefix: str) -> pd.Series:
    return messages.str.startswith(prefix).fillna(False).astype(bool)


def _last_per_thread(records: pd.DataFrame, column: str, where: pd.Series) -> pd.Series:
    """For each record, ``column`` of the latest record up to it, on its thread, where ``where`` holds."""
    return records[column].where(where).groupby(records["thread"]).ffill()


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
    checking = is_rbac & _starting(records["message"], "checking connection")
    last_check = _last_per_thread(records, "line_no", checking)
    peers = {line: _rbac_peer(text) for line, text in zip(records["line_no"][checking], records["message"][checking])}

    verdict = records["message"].where(is_rbac).str.extract(_VERDICT)
    rows = verdict["mode"].notna()
    network = records["source"].str.contains("network/rbac", regex=False).fillna(False).astype(bool)
    out = pd.DataFrame(
        {
            "connection_id": last_stream_conn.where(~network, last_conn)[rows].astype("UInt64"),
            "stream_id": last_stream.where(~network)[rows].astype("UInt64"),
            "decision": np.where(verdict["mode"][rows] == "shadow", "shadow " + verdict["verdict"][rows], verdict["verdict"][rows]),
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
    matched = pd.merge_asof(left.sort_values("line_no"), opens.sort_values("line_no"), on="line_no", by=["thread", "peer"])
    matched = matched.dropna(subset=["opened"])
    column = verdicts.columns.get_loc("connection_id")
    verdicts.iloc[matched["row"].to_numpy(), column] = matched["opened"].astype("uint64").to_numpy()
    return verdicts


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
    status = sent["message"].str.extract(r"':status', '(\d+)'", expand=False)
    return pd.DataFrame(
        {
            "connection_id": sent["connection_id"],
            "stream_id": sent["stream_id"],
            "status": pd.to_numeric(status, errors="coerce").astype("Int64"),
            "connection_close": sent["message"].str.contains("'connection', 'close'", regex=False).fillna(False).astype(bool),
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
    out["close_reason"] = ["; ".join(p for p in pair if isinstance(p, str)) or None for pair in parts.itertuples(index=False)]
    return out[["closed", "close_reason"]]


_CONNECTION_COLUMNS = ["connection_id", "direction", "remote_address", "opened", "closed", "close_reason", "upstream_connection_id", "streams", "records"]


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
        return empty.astype({"connection_id": "UInt64", "upstream_connection_id": "UInt64", "opened": "datetime64[ns]", "closed": "datetime64[ns]", "streams": "int64", "records": "int64"})
    messages = rows["message"]
    groups = rows.groupby("connection_id", sort=True)
    out = pd.DataFrame({"opened": groups["timestamp"].first(), "records": groups.size(), "streams": groups["stream_id"].nunique()})
    out.index = out.index.astype("uint64")

    accepted = _starting(messages, "new connection")  # older releases print no peer
    peer = messages.str.extract(r"^(?:new connection from|connecting to) (\S+)", expand=False)
    dialed = _starting(messages, "connecting to ")
    links = _upstream_links(records)
    upstream = set(links.tolist()) | set(rows.loc[dialed, "connection_id"].astype("uint64").tolist())
    downstream = set(rows.loc[accepted, "connection_id"].astype("uint64").tolist())
    out["direction"] = ["downstream" if c in downstream else "upstream" if c in upstream else None for c in out.index.tolist()]
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
    items += [("connections", int(records["connection_id"].nunique())), ("streams", int(records["stream_id"].nunique()))]
    verdicts = rbac_decisions(df)["decision"].value_counts()
    items += [(f"rbac {decision}", int(verdicts.get(decision, 0))) for decision in ("allowed", "denied", "shadow allowed", "shadow denied")]
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
        buf = bytearray(1 << 20)
        while True:
            got = stream.readinto(memoryview(buf))
            if not got:
                break
            chunks.append(bytes(buf[:got]))
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
    df = pd.DataFrame.from_records(rows, columns=columns) if rows else pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    df["start_time"] = pd.to_datetime(df["start_time"], errors="coerce", utc=True, format="ISO8601").dt.tz_convert(None).astype("datetime64[ns]")
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
