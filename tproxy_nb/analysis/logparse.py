"""Envoy debug logs into a DataFrame: :func:`parse_envoy_log`, one row per record.

Formats read, also mixed in one file:

* Envoy's default ``[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v``, connection and
  stream ids as ``[Tags: "ConnectionId":"5","StreamId":"..."]`` (1.3x and later)
  or ``[C5][S...]`` (older releases);
* Istio's ``%Y-%m-%dT%T.%fZ\\t%l\\tenvoy %n %g:%#\\t%v\\tthread=%t``;
* JSON application logs (``application_log_config.log_format.json_format``),
  one object a line, with keys such as ``timestamp``, ``thread``, ``level``,
  ``logger``, ``source``, ``message``, ``ConnectionId``, ``StreamId``.

Conventions, from how Envoy logs:

* A *record* line carries the full header of its format. Other lines
  *continue* the record before them (bracket and Istio formats; a JSON record
  is one line) and are folded into its ``message``.
* *Not records*, and not continuations either: lines before the first record,
  lines that start like some program's log line (``[2026-``, ``2026-11-26``,
  ``{``) without a full Envoy header, and the lines that follow such a line.
  They are kept as rows whose ``level`` (and ``timestamp``) is null, with the
  raw line in ``message``; ``df.attrs["unparsed"]`` counts them. Blank lines
  outside records are dropped.
* Bad bytes are decoded with U+FFFD; nothing in the input raises.

Why numpy: a debug log of a few minutes of traffic runs to millions of lines,
and one regex per line in Python takes about 50 times as long as reading the
file. So Envoy's default format, nearly every line in practice, is read from
4 MiB blocks of bytes with a few array passes per field (fixed-width byte
patterns, digits summed by dot products, each distinct thread/level/logger/source
span checked once), no Python per line: about 10 times a bare read, five times
faster than the regexes (``bench/bench_logs.py`` measures it). The other
formats, and default-format lines the arrays cannot vouch for, take one regex
or ``json.loads`` per record line and give the very same rows.

Example:
    >>> df = parse_envoy_log("envoy.log")
    >>> df[df["level"] == "warning"][["timestamp", "logger", "message"]]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["COLUMNS", "Source", "parse_envoy_log"]

#: Columns of :func:`parse_envoy_log`, in order.
COLUMNS = ("timestamp", "thread", "level", "logger", "source", "connection_id", "stream_id", "message", "line_no")

#: What the parsers read: a path, log text, bytes or a file object.
Source = str | bytes | bytearray | memoryview | os.PathLike | BinaryIO | io.TextIOBase

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
    last = None
    for start in (max(0, len(view) - (1 << 20)), 0):  # the last MiB first: a boundary is nearly always there
        for match in _BOUNDARY.finditer(view, start):
            last = match
        if last is not None or start == 0:
            break
    return 0 if last is None else last.start() + 1


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
            got = stream.readinto(buf.data[_PAD + filled : _PAD + size])
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
        cut = _last_boundary(buf.data[_PAD : _PAD + filled])
        if cut == 0:
            size *= 2
            bigger = np.zeros(size + 2 * _PAD + 1, np.uint8)
            bigger[: len(buf)] = buf
            buf = bigger
            continue
        yield buf, cut
        rest = filled - cut
        buf[_PAD : _PAD + rest] = buf[_PAD + cut : _PAD + filled]  # numpy copies overlaps safely
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
    ids = _Ids(
        np.zeros(n, np.uint64),
        np.zeros(n, bool),
        np.zeros(n, np.uint64),
        np.zeros(n, bool),
        pos.copy(),
        np.ones(n, bool),
    )
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
        stream_ok = (
            conn_ok & _at(data, c_close + 1, _OLD_STREAM) & (s_close - count == c_close + 3) & (s_close < end[rows])
        )
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
_IDS_TEXT = r"\[Tags: ([^\]\n]*)\] ?|\[C(\d+)\](?:\[S(\d+)\])? ?"
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
    return int(text) if text.isascii() and text.isdigit() and int(text) < 2**64 else None  # not "²"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")  # a bad byte inside a header must not raise


def _ids_in(match: re.Match | None) -> tuple[int | None, int | None]:
    if match is None:
        return None, None
    tags, conn, stream = (_text(g) if isinstance(g, bytes) else g for g in match.groups())
    if tags is not None:
        pairs = dict(_TAG_PAIR.findall(tags))
        return _to_uint(pairs.get("ConnectionId", "")), _to_uint(pairs.get("StreamId", ""))
    return _to_uint(conn), (_to_uint(stream) if stream else None)


def _slow_bracket_or_istio(line: bytes) -> _Slow | None:
    source: str | None
    m = _BRACKET.match(line)
    if m:
        ts, thread, level, logger, source = (_text(g) for g in m.groups())
        istio = False
    else:
        m = _ISTIO.match(line)
        if not m:
            return None
        ts, level, logger = _text(m[1]), _text(m[2]), _text(m[3])
        source = None if m[4] is None else _text(m[4])  # optional in _ISTIO
        thread, istio = None, True
    ids = _IDS_B.match(line, m.end())
    conn, stream = _ids_in(ids)
    at = ids.end() if ids and conn is not None else m.end()
    return _Slow(ts, int(thread) if thread else None, level, logger, source, conn, stream, at, None, istio)


def _slow_json(line: bytes) -> _Slow | None:
    try:
        obj = json.loads(_text(line))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    ts, level, logger = obj.get("timestamp", obj.get("time")), obj.get("level"), obj.get("logger", obj.get("name"))
    if not (isinstance(ts, str) and isinstance(level, str) and isinstance(logger, str) and ts and level and logger):
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
        m = _KEY.fullmatch(_text(data[key_start[row] : key_end[row]].tobytes()))
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
        text = str(body.data, "ascii")  # the common case: offsets in bytes are offsets in text
    except UnicodeDecodeError:
        raw = body.tobytes()
        return lambda a, b: [raw[i:j].decode("utf-8", "replace") for i, j in zip(a.tolist(), b.tolist())]
    return lambda a, b: list(map(text.__getitem__, map(slice, a.tolist(), b.tolist())))


# ---------------------------------------------------------------- public


# The row arrays of _parse_block with no rows: an empty input takes the same path as any other.
_NO_ROWS = {
    key: np.empty(0, dtype)
    for key, dtype in [
        ("ns", np.int64),
        ("header", np.int64),
        ("conn", np.uint64),
        ("has_conn", bool),
        ("stream", np.uint64),
        ("has_stream", bool),
        ("message", object),
        ("line_no", np.int64),
    ]
}


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
        >>> line = ('[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] '
        ...         '[Tags: "ConnectionId":"5"] new stream')
        >>> df = parse_envoy_log(line)
        >>> df.loc[0, "logger"], int(df.loc[0, "connection_id"]), df.loc[0, "message"]
        ('http', 5, 'new stream')
    """
    headers = _Headers()
    parts, line, unparsed = [_NO_ROWS], 1, 0
    with _binary(source) as stream:
        for buf, n in _blocks(stream):
            part = _parse_block(buf, n, line, headers)
            line += part["lines"]
            unparsed += part["unparsed"]
            parts.append(part)

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
            "line_no": joined("line_no"),
        }
    )
    df.attrs["unparsed"] = unparsed
    return df
