"""Envoy debug logs into a DataFrame: :func:`parse_envoy_log`, one row per record.

Every log *family* Envoy and Istio print is one readable regular expression
below (``ENVOY``, ``ENVOY_1_7``, ``ISTIO_1_4``, ``ISTIO``) or, for JSON, one
table of keys (``JSON_KEYS``). The family is recognised per line, so files that
mix them (Envoy writes its default format until the bootstrap names another,
pasted tickets mix everything) are read as they are.

Conventions, from how Envoy logs (DESIGN.md, "Log analysis contract"):

* A *record* line carries the full header of its family. The lines after it
  *continue* it (header dumps, multi-line messages) and are folded into its
  ``message`` up to its last non-blank line. A JSON record is one line.
* *Not records*, and not continuations either: lines before the first record,
  lines that start like some program's log line (``[2026-``, ``2026-11-26``,
  ``{``, ``[Envoy``) without a full header (a line cut off, an access-log line,
  Istio's pilot-agent), and the lines after such a line. Each is kept as a row
  with a null ``timestamp`` and ``level`` and its raw text in ``message``;
  ``df.attrs["unparsed"]`` counts them. Blank lines outside records are dropped.
* Bad bytes are decoded as U+FFFD; nothing in the input raises.

How to read this file: the families section is the definition of every format.
There are two paths, and both give the same frame (tests compare them):

1. The regex path (``_slow_text``, ``_slow_json``) applies the families to one
   line at a time. It reads every family, and every line the other path leaves.
2. The numpy path (``_default_headers``) reads Envoy's default format, nearly
   every line of a real debug log, about seven times faster: it checks fixed
   byte patterns at all line starts at once ("[0000-00-00 00:00:00.000][" for
   the timestamp), finds the header's brackets with ``searchsorted``, and
   checks each distinct "thread][level][logger] [source" span once with
   ``_KEY``. Lines it cannot vouch for fall through to path 1;
   ``parse_envoy_log(..., fast=False)`` skips it.

The file is read in blocks of a few MiB, cut where a log line starts;
``_fold_continuations`` gives each record its continuation lines. Text never
becomes one Python ``str`` per line: messages and the other text columns are
Arrow strings gathered from byte spans (``_spans``); pandas 3 keeps them as its
Arrow-backed "str" columns.

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
from typing import Any, BinaryIO, NamedTuple, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COLUMNS", "FAMILIES", "JSON_KEYS", "Source", "parse_envoy_log"]

#: Columns of :func:`parse_envoy_log`, in order. ``format`` names the family of each record (null for non-records).
COLUMNS = (
    "timestamp",
    "thread",
    "level",
    "logger",
    "source",
    "connection_id",
    "stream_id",
    "message",
    "line_no",
    "format",
)

#: What the parsers read: a path, log text, bytes or a file object.
Source = str | bytes | bytearray | memoryview | os.PathLike | BinaryIO | io.TextIOBase

# pandas >= 3 stores text as its "str" dtype, pandas 2 as object: use whichever
# this pandas gives plain strings, so empty and full frames agree.
_TEXT = pd.Series(["x"]).dtype

# ---------------------------------------------------------------- the families
#
# Each text family is one regex, written as commented pieces. Every one starts
# with "\n" (blocks are searched with a newline put in front, so "\n" marks a
# line start and gives the regex engine a literal to scan for) and has the same
# named groups, so all families fill the same columns.

# Connection and stream ids, printed right before the message, in either style Envoy used:
_IDS = (
    r"(?:"
    # [Tags: "ConnectionId":"5","StreamId":"6"]
    r'\[Tags:\ "ConnectionId":"(?P<tag_conn>\d+)"(?:,"StreamId":"(?P<tag_stream>\d+)")?\]\ ?'
    r"|\[Tags:\ (?P<tags>[^\]\n]*)\]\ ?"  # [Tags: ...] with other tags or another order
    r"|\[C(?P<conn>\d+)\](?:\[S(?P<stream>\d+)\])?\ ?"  # [C5][S6] (Envoy before 1.30) or [C5]
    r")?"
)
_MESSAGE = r"(?P<message>.*)"  # the rest of the line; continuation lines are added later

# Envoy's default "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v" (1.8 and later):
# [2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] [Tags: "ConnectionId":"5"]
#   new stream
_BRACKETED_HEADER = (
    r"\[(?P<timestamp>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d{1,9})?)\]"  # [2026-11-26 06:10:01.123]
    r"\[(?P<thread>\d+)\]"  # [7]
    r"\[(?P<level>[a-z]+)\]"  # [debug]
    r"\[(?P<logger>[\w.-]+)\]\ "  # [http]
)
ENVOY = re.compile(
    r"\n"
    + _BRACKETED_HEADER
    + r"\[(?P<source>[^\s\[\]]+:\d+)\](?:\ |$)"  # [source/common/http/conn_manager_impl.cc:393]
    + _IDS
    + _MESSAGE,
    re.ASCII,
)

# Envoy up to about 1.12 printed the source location inside the message, without its opening bracket:
# [2018-06-20 10:42:08.410][17][debug][http] external/envoy/source/common/http/conn_manager_impl.cc:187] [C12]
#   new stream
# (Envoy 1.7 and older also printed each header of a dump as a record of its own: "[C1][S2]   ':path':'/'".)
ENVOY_1_7 = re.compile(
    r"\n"
    + _BRACKETED_HEADER
    + r"(?P<source>[^\s\[\]]+:\d+)\](?:\ |$)"  # external/envoy/source/common/http/conn_manager_impl.cc:187]
    + _IDS
    + _MESSAGE,
    re.ASCII,
)

# Istio 1.4 put pilot-agent's epoch in front of Envoy's default line:
# [Envoy (Epoch 0)] [2020-02-11 16:04:50.792][22][debug][filter] [external/envoy/source/.../original_dst.cc:18]
#   original_dst: New connection accepted
ISTIO_1_4 = re.compile(
    r"\n\[Envoy\ \(Epoch\ \d+\)\]\ "  # [Envoy (Epoch 0)]
    + _BRACKETED_HEADER
    + r"\[(?P<source>[^\s\[\]]+:\d+)\](?:\ |$)"  # [external/envoy/source/.../original_dst.cc:18]
    + _IDS
    + _MESSAGE,
    re.ASCII,
)

# Istio's "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t" (istio/istio pkg/envoy/proxy.go), also its
# shorter older forms without the source location or "thread=", and all of them pasted with tabs turned to spaces:
# 2024-04-24T01:32:42.812279Z\tdebug\tenvoy rbac external/envoy/.../rbac_filter.cc:114\tchecking request\tthread=15
# 2021-08-03T06:46:35.297262Z debug   envoy filter    override with 3 ALPNs
ISTIO = re.compile(
    r"\n(?P<timestamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?)Z"  # 2024-04-24T01:32:42.812279Z
    r"[\t\ ]+(?P<level>trace|debug|info|warning|warn|error|critical)"  # \tdebug
    r"[\t\ ]+envoy\ (?P<logger>[\w.-]+)"  # \tenvoy rbac (Envoy's logger; Istio's own scopes have no "envoy ")
    r"(?:[\t\ ]+(?P<source>[^\s\[\]]+\.[a-z]+:\d+))?"  # external/envoy/source/.../rbac_filter.cc:114
    r"(?:[\t\ ]+|(?=\[)|(?=\n|$))"  # a tab (or spaces) before the message; pastes lose the tab before "[Tags"
    + _IDS
    + r"(?P<message>.*?)"  # the message, lazily: "thread=" may follow
    r"(?:[\t\ ]+thread=(?P<thread>\d+))?[\t\ ]*(?=\n|$)",  # \tthread=15 (on the last line of a multi-line record)
    re.ASCII,
)

#: The text families, name -> regex. Each line belongs to at most one: they differ in their first characters.
#: They are ASCII regexes (``\s`` is no "\x85"): the regex path matches a Latin-1 view of the bytes, where
#: the bytes of one UTF-8 character ("\xc3\xa0", à) must not count as a space.
FAMILIES: dict[str, re.Pattern] = {"envoy": ENVOY, "envoy-1.7": ENVOY_1_7, "istio-1.4": ISTIO_1_4, "istio": ISTIO}

# Envoy's JSON application logs (application_log_config.log_format.json_format or a JSON --log-format) name
# their keys as the user chose; Istio's --log_as_json uses
# {"level":"%l","time":"%Y-%m-%dT%T.%fZ","scope":"envoy %n","msg":"%j","caller":"%g:%#","thread":%t}.
# Each column is read from the first of these keys the object has (case-insensitive).
JSON_KEYS = {
    "timestamp": ("timestamp", "time", "ts", "@timestamp", "date"),
    "level": ("level", "severity", "lvl"),
    "logger": ("logger", "name", "component", "type", "logger_name", "scope"),
    "thread": ("thread", "thread_id", "threadid", "tid"),
    "source": ("source", "caller", "sourceline", "source_location", "file"),
    "message": ("message", "msg", "log"),
    "connection_id": ("connectionid", "connection_id"),
    "stream_id": ("streamid", "stream_id"),
}
# A JSON line cut where a multi-line "%v" message broke it:
# {"time": "...", "level": "debug", "message": "request headers
_JSON_BROKEN = re.compile(r'\{(?P<head>.*?)"(?:message|msg|log)"\s*:\s*"(?P<message>.*)', re.IGNORECASE)
_JSON_BROKEN_END = re.compile(r'"\s*\}\s*$')
_JSON_PAIR = re.compile(r'"([\w@]+)"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(-?\d+))')

# Where some program's log line may start: such a line ends the record above it.
_ISTIO_THREAD = re.compile(r"[\t ]+thread=(\d+)[\t ]*$")
_LEVELS = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical"}


# ---------------------------------------------------------------- input

# Arrow memory comes from the system allocator: Arrow's default (mimalloc) kept
# freed per-block arrays resident, 100 MB more peak memory on a 200 MB log.
_POOL = pa.system_memory_pool()

_BLOCK = 1 << 22  # bytes read at a time; a record never straddles two blocks
_PAD = 64  # slack around a block, so fixed-width windows never leave the array

# Where some program's log line (or an Envoy header) may start: a record is
# never split there and a continuation never runs past it.
_LOG_LINE_START = rb"\[\d{4}-|\[Envoy \(|\d{4}-\d\d-\d\d|\{"
_BOUNDARY = re.compile(rb"\n(?=" + _LOG_LINE_START + rb")")


def _is_existing_path(text: str) -> bool:
    return "\n" not in text and os.path.isfile(text)


class _ReadAdapter:
    """``readinto`` and ``read`` over any object with ``read``; text is encoded as UTF-8."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = b""

    def read(self, n: int = -1) -> bytes:
        data = self._pending + _as_bytes(self._stream.read(n))
        self._pending = b""
        return data

    def readinto(self, target: memoryview) -> int:
        if not self._pending:
            self._pending = _as_bytes(self._stream.read(len(target)))
        n = min(len(target), len(self._pending))
        target[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _as_bytes(data: Any) -> bytes:
    return data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data or b"")


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
    for start in (max(0, len(view) - (1 << 16)), 0):  # the last 64 KiB first: a boundary is nearly always there
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
    """``data[p:p + width]`` for every p, as a new (len(pos), width) array.

    Every window of ``data`` is one item of ``width`` bytes (items overlap:
    one byte apart), so one gather copies them all; twice as fast as
    indexing numpy's ``sliding_window_view``.
    """
    windows = np.ndarray((len(data) - width + 1,), f"V{width}", data, strides=(1,))
    return windows[pos].view(np.uint8).reshape(len(pos), width)


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


def _decimal(digits: np.ndarray) -> np.ndarray:
    """Each row of digit values (0-9, most significant first) as one uint64 number.

    Integer arithmetic, column by column: a matrix product would be shorter but
    runs in BLAS threads that spin on a busy machine.
    """
    value = np.zeros(len(digits), np.uint64)
    for column in digits.T:
        value = value * np.uint64(10) + column
    return value


_COL24 = np.arange(24)


def _number_before(data: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The run of decimal digits that ends just before each ``end``: (uint64 value, digit count).

    The count is 0 when there is no digit there, or when the number does not
    fit 64 bits (more than 20 digits, or above 2**64 - 1): the regex path reads those.
    """
    digits = _window(data, end - 24, 24) - np.uint8(48)
    # Digits counted from the end; argmax finds the first other byte (0 if there is none).
    count = np.argmax(digits[:, ::-1] > 9, axis=1)  # uint8 wraps: bytes below "0" become large
    digits *= _COL24 >= (24 - count)[:, None]
    high, low = _decimal(digits[:, 4:14]), _decimal(digits[:, 14:])  # ten digits each
    fits = (count <= 20) & ((high < 1844674407) | ((high == 1844674407) & (low <= 3709551615)))
    return high * np.uint64(10**10) + low, np.where(fits, count, 0)


# The default header's timestamp, "[YYYY-MM-DD HH:MM:SS.mmm][", and the columns of each of its fields.
_TS_PATTERN = _pattern("[0000-00-00 00:00:00.000][")
_TS_FIELDS = ((1, 5), (6, 8), (9, 11), (12, 14), (15, 17), (18, 20), (21, 24))  # year, month, ... millisecond
# Days from 1970-01-01 to the first of each month, 1970 to 2200.
_MONTH_DAYS = np.arange(12 * 230 + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _default_timestamps(data: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since the epoch from ``[YYYY-MM-DD HH:MM:SS.mmm][`` at ``start``, and validity."""
    window = _window(data, start, len(_TS_PATTERN[0]))
    ok = _matches(window, _TS_PATTERN)
    digits = window - np.uint8(48)
    year, month, day, hour, minute, second, milli = (_decimal(digits[:, a:b]).astype(np.int64) for a, b in _TS_FIELDS)
    month_index = (year - 1970) * 12 + month - 1
    ok &= (month_index >= 0) & (month_index < len(_MONTH_DAYS) - 1) & (month >= 1) & (month <= 12)
    month_index = np.where(ok, month_index, 0)
    # Dates and times pandas would not read (February 30, a leap second) are left to the regex path.
    ok &= (day >= 1) & (day <= _MONTH_DAYS[month_index + 1] - _MONTH_DAYS[month_index])
    ok &= (hour < 24) & (minute < 60) & (second < 60)
    days = _MONTH_DAYS[month_index] + day - 1
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    return (seconds * 1000 + milli) * 1_000_000, ok


def _spans(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """The byte strings ``data[start:end]`` as one Arrow ``large_string`` array; bad bytes as U+FFFD.

    The spans must be in order and must not overlap. Arrow copies them in C++:
    the spans, alternating with the gaps between them, are values of one array
    over ``data`` (no copy), and ``take`` keeps every other value.
    """
    if not len(starts):
        return pa.array([], pa.large_string())
    bounds = np.empty(2 * len(starts), np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    if bounds[0] < 0 or bounds[-1] > len(data) or (np.diff(bounds) < 0).any():
        raise ValueError("spans out of order")  # a bug here, never the input: Arrow would read past the bytes
    alternating = pa.Array.from_buffers(
        pa.large_binary(), len(bounds) - 1, [None, pa.py_buffer(bounds), pa.py_buffer(data)]
    )
    every_other = pa.array(np.arange(0, len(bounds), 2))  # an Arrow index: take() is slow with a numpy one
    binary = pc.take(alternating, every_other, memory_pool=_POOL)
    try:
        return pc.cast(binary, pa.large_string(), memory_pool=_POOL)  # checks the UTF-8
    except pa.ArrowInvalid:  # some span is no UTF-8: decode them all as the regex path does
        return pa.array([b.decode("utf-8", "replace") for b in binary.to_pylist()], pa.large_string())


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
    no_ids = np.zeros(n, np.uint64), np.zeros(n, bool), np.zeros(n, np.uint64), np.zeros(n, bool)
    ids = _Ids(*no_ids, pos.copy(), np.ones(n, bool))
    k = np.searchsorted(closes, pos)
    first_close, second_close = closes[k], closes[k + 1]
    opening = _window(data, pos, len(_TAGS[0]))  # every pattern below is a prefix of _TAGS's width
    ids.ok[_matches(opening[:, :8], _ANY_TAGS)] = False  # other tags, or another order: the slow path reads them

    rows = np.flatnonzero(_matches(opening, _TAGS))
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

    rows = np.flatnonzero(_matches(opening[:, :8], _OLD_CONN))
    if rows.size:
        c_close, s_close = first_close[rows], second_close[rows]
        conn, count = _number_before(data, c_close)
        conn_ok = (count > 0) & (c_close - count == pos[rows] + 2) & (c_close < end[rows])
        stream, count = _number_before(data, s_close)
        stream_shown = conn_ok & _at(data, c_close + 1, _OLD_STREAM)
        stream_ok = stream_shown & (s_close - count == c_close + 3) & (s_close < end[rows])
        ids.ok[rows] = conn_ok & (stream_ok | ~stream_shown)  # "[C5..." or "[C5][S6..." cut or odd: the regexes
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


# The span the numpy path checks once per distinct value, "7][debug][http] [source/...cc:393": ENVOY's pieces.
_KEY = re.compile(r"(\d+)\]\[([a-z]+)\]\[([\w.-]+)\]\ \[([^\s\[\]]+:\d+)", re.ASCII)


# ---------------------------------------------------------------- the regex path: one line at a time
#
# Every line the numpy path does not vouch for is read here, with the family
# regexes above: the definition of each format, and the reference the numpy
# path is tested against (tests/test_logs.py switches it off and compares).

_TAG_PAIR = re.compile(r'"(\w+)":"?([^",]*)"?')
_BRACKET_FAMILIES = ("envoy", "envoy-1.7", "istio-1.4")


class _Slow(NamedTuple):
    """One record line read by a family regex or ``json.loads``."""

    family: str
    timestamp: str
    thread: int | None
    level: str
    logger: str | None
    source: str | None
    connection: int | None
    stream: int | None
    message_at: int  # byte offset of the message in the line; -1: ``message`` holds it all
    message: str | None  # JSON only: the whole message


def _to_uint(value: Any) -> int | None:
    text = "" if value is None else str(value).strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) < 2**64 else None  # not "²"


@overload
def _utf8(latin: str) -> str: ...
@overload
def _utf8(latin: None) -> None: ...
def _utf8(latin: str | None) -> str | None:
    """A field matched in the Latin-1 view of a line, as the UTF-8 text it is (bad bytes as U+FFFD)."""
    return None if latin is None else latin.encode("latin-1").decode("utf-8", "replace")


def _ids_of(groups: dict[str, str | None]) -> tuple[int | None, int | None]:
    """Connection and stream id from the ``_IDS`` groups of a match."""
    tags = groups.get("tags")
    if tags is not None:
        pairs = dict(_TAG_PAIR.findall(tags))
        return _to_uint(pairs.get("ConnectionId", "")), _to_uint(pairs.get("StreamId", ""))
    conn = groups.get("tag_conn") or groups.get("conn")
    stream = groups.get("tag_stream") or groups.get("stream")
    return (_to_uint(conn) if conn else None), (_to_uint(stream) if stream else None)


def _slow_text(line: bytes) -> _Slow | None:
    """A text-family record line (``[...`` or ``2024-...``), or None."""
    # Latin-1 maps each byte to one character: match offsets are byte offsets, and no byte is "bad".
    view = "\n" + line.decode("latin-1")
    names = _BRACKET_FAMILIES if line[:1] == b"[" else ("istio",)
    for family in names:
        m = FAMILIES[family].match(view)
        if m:
            break
    else:
        return None
    g = m.groupdict()
    conn, stream = _ids_of(g)
    level = _LEVELS.get(g["level"], g["level"])
    # Istio's thread follows the message, maybe on a later line: read from the folded record (_finish_istio).
    thread = int(g["thread"]) if g["thread"] and family != "istio" else None
    return _Slow(
        family,
        g["timestamp"],
        thread,
        level,
        _utf8(g["logger"]),
        _utf8(g["source"]),
        conn,
        stream,
        m.start("message") - 1,
        None,
    )


def _json_get(obj: dict, column: str) -> Any:
    """The value of the first key of ``JSON_KEYS[column]`` the object has (any case), or None."""
    for key in JSON_KEYS[column]:
        value = obj.get(key)
        if value is not None and value != "":
            return value
    return None


def _slow_json(line: bytes) -> _Slow | None:
    """A JSON application-log line, or None when it is no Envoy record (Istio's own scopes, say).

    A line that is no valid JSON but opens like one and has a message key is read
    too: a ``%v`` layout whose message broke the JSON (a quote, a header dump);
    its message runs on over the lines after it, and its closing ``"}`` is dropped.
    """
    text = _utf8(line.decode("latin-1"))
    broken_at = -1
    try:
        obj = json.loads(text)
    except ValueError:
        m = _JSON_BROKEN.match(line.decode("latin-1"))
        if not m:
            return None
        obj = {k: (s if s else n) for k, s, n in _JSON_PAIR.findall(_utf8(m["head"]))}
        broken_at = m.start("message")
        ids = re.compile(_IDS).match(m.string, broken_at)  # "[Tags: "ConnectionId":"5"] ..." opens the message
        if ids and ids.end() > broken_at:
            obj["connectionid"], obj["streamid"] = _ids_of(ids.groupdict())
            broken_at = ids.end()
    if not isinstance(obj, dict):
        return None
    obj = {str(k).lower(): v for k, v in obj.items()}
    ts, level, logger = _json_get(obj, "timestamp"), _json_get(obj, "level"), _json_get(obj, "logger")
    family = "envoy-json"
    if "scope" in obj and logger is obj["scope"]:  # Istio: Envoy's lines have scope "envoy <logger>"
        family = "istio-json"
        logger = logger[6:] if isinstance(logger, str) and logger.startswith("envoy ") else None
    if not all(isinstance(v, str) and v for v in (ts, level, logger)):
        return None
    source = _json_get(obj, "source")
    if source is not None and obj.get("line") is not None and ":" not in str(source):
        source = f"{source}:{obj['line']}"
    message = "" if broken_at >= 0 else str(_json_get(obj, "message") or "").rstrip("\n")
    conn, stream = _to_uint(_json_get(obj, "connection_id")), _to_uint(_json_get(obj, "stream_id"))
    if conn is None and stream is None and broken_at < 0:
        ids = re.match(_IDS, message)  # ids printed at the start of the message, "[C5][S6] ..."
        if ids and ids.end():
            conn, stream = _ids_of(ids.groupdict())
            message = message[ids.end() :]
    thread = _to_uint(_json_get(obj, "thread"))
    level = _LEVELS.get(level.lower(), level.lower())
    return _Slow(
        family,
        ts,
        thread,
        level,
        logger,
        None if source is None else str(source),
        conn,
        stream,
        broken_at,
        None if broken_at >= 0 else message,
    )


def _slow(line: bytes) -> _Slow | None:
    """The header of a line the numpy path did not read, or None when it is no record."""
    return _slow_json(line) if line[:1] == b"{" else _slow_text(line)


# ---------------------------------------------------------------- per block

#: The ``format`` names, in code order (code -1: no record).
_FORMATS = ("envoy", "envoy-1.7", "istio-1.4", "istio", "envoy-json", "istio-json")
_FORMAT_CODE = {name: code for code, name in enumerate(_FORMATS)}


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
            out[name] = _take([r[i] for r in rows], codes)
        return out


def _take(values: Any, codes: np.ndarray) -> pa.Array:
    """``values[code]`` for each code as an Arrow string array (code -1: the last value)."""
    codes = pa.array(np.where(codes < 0, len(values) - 1, codes))
    return pc.take(pa.array(values, pa.large_string()), codes, memory_pool=_POOL)


def _text(values: pa.Array | pa.ChunkedArray) -> Any:
    """An Arrow string array as this pandas' plain text column (Arrow-backed "str", or object in pandas 2)."""
    if isinstance(_TEXT, np.dtype):  # pandas 2: object
        return values.to_numpy(zero_copy_only=False)
    return pd.array(values, dtype=_TEXT)


# What a line is, for ownership of the continuation lines that follow it.
_CONTINUATION, _OWNER, _SINGLE, _ORPHAN = 0, 1, 2, 3

_BRACKET_START = _pattern("[0000-")
_EPOCH_START = _pattern("[Envoy (")
_DATE_START = _pattern("0000-00-00")


def _starts_like_log_line(data: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts with ``[dddd-``, starts like any log line: that, ``[Envoy (``, ``dddd-dd-dd`` or ``{``)."""
    first = data[s]
    bracket = np.zeros(len(s), bool)
    epoch = np.zeros(len(s), bool)
    rows = np.flatnonzero(first == ord("["))
    opening = _window(data, s[rows], 8)
    bracket[rows], epoch[rows] = _matches(opening, _BRACKET_START), _matches(opening, _EPOCH_START)
    date = np.zeros(len(s), bool)
    rows = np.flatnonzero((first - np.uint8(48)) <= 9)
    date[rows] = _at(data, s[rows], _DATE_START)
    return bracket, bracket | epoch | date | (first == ord("{"))


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
        self.format = np.full(count, -1, np.int8)  # code in _FORMATS
        self.ns = np.full(count, np.iinfo(np.int64).min, np.int64)  # NaT
        self.header = np.full(count, -1, np.int64)  # code in _Headers
        self.conn, self.has_conn = np.zeros(count, np.uint64), np.zeros(count, bool)
        self.stream, self.has_stream = np.zeros(count, np.uint64), np.zeros(count, bool)
        # A row's message is the bytes from message_at to message_end, unless ``fixed`` holds its text.
        self.message_at = self.starts.copy()
        self.message_end = self.starts.copy()
        self.fixed: dict[int, str] = {}


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
    # Each distinct "thread][level][logger] [source" is checked and numbered once.
    keys = pc.dictionary_encode(_spans(data, key_start, key_end), memory_pool=_POOL)
    codes = np.full(len(keys.dictionary), -1, np.int64)
    for i, key in enumerate(keys.dictionary.to_pylist()):
        m = _KEY.fullmatch(key)
        if m:
            codes[i] = headers.number((int(m[1]), _LEVELS.get(m[2], m[2]), m[3], m[4]))
    code_of_line = codes[keys.indices.to_numpy()]
    read = code_of_line >= 0  # the rest fall through to the slow path
    lines, keep = lines[read], keep[read]
    block.kind[lines] = _OWNER
    block.format[lines] = _FORMAT_CODE["envoy"]
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
        block.format[i] = _FORMAT_CODE[rec.family]
        block.has_conn[i], block.has_stream[i] = rec.connection is not None, rec.stream is not None
        block.conn[i], block.stream[i] = rec.connection or 0, rec.stream or 0
        if rec.message is not None:
            block.kind[i], block.fixed[i] = _SINGLE, rec.message
        else:
            block.kind[i], block.message_at[i] = _OWNER, block.starts[i] + rec.message_at
        if rec.family in ("istio", "envoy-json", "istio-json"):
            istio.append((i, rec))
        if rec.family != "istio":
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

    block.message_end[owners] = owner_end
    block.message_end[orphan] = block.ends[orphan]
    return orphan


def _finish_slow(block: _Block, slow: list[tuple[int, _Slow]], headers: _Headers) -> None:
    """Istio: move the trailing ``thread=N`` into the header. Broken JSON: drop the closing ``"}``."""
    for i, rec in slow:
        if rec.message is not None:
            continue  # a whole JSON record
        text = block.data[block.message_at[i] : block.message_end[i]].tobytes().decode("utf-8", "replace")
        if rec.family == "istio":
            m = _ISTIO_THREAD.search(text)
            thread = int(m[1]) if m else None
            if m:
                text = text[: m.start()].rstrip("\n")  # it may follow a dump's blank line
            block.header[i] = headers.number((thread, rec.level, rec.logger, rec.source))
        else:
            text = _JSON_BROKEN_END.sub("", text).rstrip("\n")
        block.fixed[i] = text


def _parse_block(buf: np.ndarray, n: int, first_line: int, headers: _Headers, fast: bool = True) -> dict[str, Any]:
    """Rows (in line order) for the whole lines in ``buf[_PAD:_PAD + n]``."""
    block = _Block(buf, n)
    bracket, log_like = _starts_like_log_line(block.data, block.starts)
    block.kind[log_like] = _ORPHAN  # until a header is read
    if fast:
        _read_default_headers(block, np.flatnonzero(bracket), headers)
    slow = _read_other_headers(block, np.flatnonzero(log_like & (block.kind != _OWNER)), headers)
    orphan = _fold_continuations(block)
    _finish_slow(block, slow, headers)
    rows = np.flatnonzero((block.kind == _OWNER) | (block.kind == _SINGLE) | orphan)
    messages = _spans(block.data, block.message_at[rows], block.message_end[rows])
    if block.fixed:
        lines = sorted(block.fixed)
        mask = np.zeros(len(rows), bool)
        mask[np.searchsorted(rows, lines)] = True
        fixed = pa.array([block.fixed[i] for i in lines], pa.large_string())
        messages = pc.replace_with_mask(messages, mask, fixed, memory_pool=_POOL)
    return {
        "ns": block.ns[rows],
        "header": block.header[rows],
        "conn": block.conn[rows],
        "has_conn": block.has_conn[rows],
        "stream": block.stream[rows],
        "has_stream": block.has_stream[rows],
        "message": messages,
        "format": block.format[rows],
        "line_no": rows + first_line,
        "unparsed": int(np.count_nonzero(orphan)),
        "lines": len(block.starts),
    }


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
        ("format", np.int8),
        ("line_no", np.int64),
    ]
}


def parse_envoy_log(source: Source, *, fast: bool = True) -> pd.DataFrame:
    """Envoy debug-log records as a DataFrame, one row per record (see the module doc).

    source: a path (``str`` naming an existing file, or ``pathlib.Path``, which
        must exist), log text (any other ``str``), ``bytes``, or a text or
        binary file object.

    fast: read Envoy's default format with the numpy path (False: the family
        regexes read every line; the same frame, about seven times slower).

    Columns: ``timestamp`` (datetime64[ns], as printed; UTC where a JSON
    line gives a zone), ``thread`` (Int64), ``level`` (Envoy's spelling:
    ``warning``), ``logger``, ``source`` (file:line), ``connection_id`` and
    ``stream_id`` (UInt64), ``message`` (continuation lines joined with "\\n",
    without the id prefix), ``line_no`` (1-based first line), ``format`` (the
    family: ``envoy``, ``envoy-1.7``, ``istio-1.4``, ``istio``, ``envoy-json``,
    ``istio-json``). Lines that are no record have a null ``level`` and
    ``format``; ``df.attrs["unparsed"]`` counts them.

    Example:
        >>> line = '[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] '
        >>> df = parse_envoy_log(line + '[Tags: "ConnectionId":"5"] new stream')
        >>> df.loc[0, "logger"], int(df.loc[0, "connection_id"]), df.loc[0, "message"]
        ('http', 5, 'new stream')
    """
    headers = _Headers()
    parts, line, unparsed = [{**_NO_ROWS, "message": pa.array([], pa.large_string())}], 1, 0
    with _binary(source) as stream:
        for buf, n in _blocks(stream):
            part = _parse_block(buf, n, line, headers, fast)
            line += part["lines"]
            unparsed += part["unparsed"]
            parts.append(part)

    def joined(key: str) -> np.ndarray:
        return np.concatenate([p.pop(key) for p in parts])  # each part's copy is freed as soon as joined

    low_card = headers.columns(joined("header"))
    df = pd.DataFrame(
        {
            "timestamp": joined("ns").view("datetime64[ns]"),
            "thread": low_card["thread"],
            "level": _text(low_card["level"]),
            "logger": _text(low_card["logger"]),
            "source": _text(low_card["source"]),
            "connection_id": pd.arrays.IntegerArray(joined("conn"), ~joined("has_conn")),
            "stream_id": pd.arrays.IntegerArray(joined("stream"), ~joined("has_stream")),
            "message": _text(pa.chunked_array([p["message"] for p in parts])),
            "line_no": joined("line_no"),
            "format": _text(_take((*_FORMATS, None), joined("format"))),
        }
    )
    df.attrs["unparsed"] = unparsed
    return df
