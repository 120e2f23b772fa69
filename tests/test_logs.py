"""tproxy_nb.logs: Envoy logs into DataFrames, checked against real captures.

The ``envoy-1.40-*`` files are Envoy 1.40 debug logs captured on 127.0.0.1
(see tests/data/logs/README.md); ``envoy-1.17-brackets.log`` is the same
traffic rewritten into the older ``[C5][S6]`` style. Small hand-made logs
are inline, next to the test that reads them.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tproxy_nb.analysis import logparse, logs
from tproxy_nb.analysis.logs import (
    ACCESS_LOG_FORMAT,
    COLUMNS,
    connections,
    parse_access_log,
    parse_envoy_log,
    rbac_decisions,
    responses,
    summary,
)

DATA = Path(__file__).parent / "data" / "logs"
DEFAULT = DATA / "envoy-1.40-default.log"
ISTIO = DATA / "envoy-1.40-istio.log"
JSON = DATA / "envoy-1.40-json.log"
BRACKETS = DATA / "envoy-1.17-brackets.log"
ACCESS = DATA / "access-1.40.jsonl"
ISTIO_PASTED = DATA / "envoy-1.40-istio-pasted.log"
ISTIO_JSON = DATA / "envoy-1.40-istio-json.log"
JSON_V = DATA / "envoy-1.40-json-v.log"
LEGACY = DATA / "envoy-1.7-legacy.log"
EPOCH = DATA / "istio-1.4-epoch.log"
SHORT = DATA / "istio-short-pasted.log"
MIXED_FILE = DATA / "mixed-paste.log"

DTYPES = {
    "timestamp": "datetime64[ns]",
    "thread": "Int64",
    "connection_id": "UInt64",
    "stream_id": "UInt64",
    "line_no": "int64",
}


def _check_frame(df: pd.DataFrame) -> None:
    assert tuple(df.columns) == COLUMNS
    for column, dtype in DTYPES.items():
        assert str(df[column].dtype) == dtype, column


def _row(df: pd.DataFrame, line_no: int) -> dict:
    return df.set_index("line_no").loc[line_no].to_dict()


def _first_line(df: pd.DataFrame, needle: str) -> int:
    return int(df.loc[df["message"].str.contains(needle, regex=False).fillna(False), "line_no"].iloc[0])


# ---------------------------------------------------------------- formats


def test_logs_re_exports_the_parser():
    """Code written against tproxy_nb.logs keeps working after the parser moved to logparse."""
    assert logs.parse_envoy_log is logparse.parse_envoy_log and logs.COLUMNS is logparse.COLUMNS


def test_default_format_capture_reads_every_record():
    df = parse_envoy_log(DEFAULT)
    _check_frame(df)
    assert df.attrs["unparsed"] == 0
    assert df["level"].notna().all()
    assert set(df["level"]) == {"debug", "info", "warning"}
    assert set(df["thread"]) == {13466, 13472, 13475, 13476, 13477, 13478}  # main, workers, gRPC threads
    # Every record points at its first line, and its message starts that line's text.
    lines = DEFAULT.read_text().splitlines()
    for line_no, message in zip(df["line_no"], df["message"]):
        assert lines[line_no - 1].endswith(message.split("\n")[0])


def test_default_format_header_dump_folds_into_its_record():
    df = parse_envoy_log(DEFAULT)
    line_no = _first_line(df, "request headers complete")
    row = _row(df, line_no)
    assert row["logger"] == "http"
    assert row["source"] == "source/common/http/conn_manager_impl.cc:1560"
    assert row["connection_id"] == 0
    assert row["stream_id"] == 7660981501193858596
    assert row["timestamp"] == pd.Timestamp("2026-11-26 06:09:47.408")
    assert row["message"] == (
        "request headers complete (end_stream=true):\n"
        "':authority', '127.0.0.1:19901'\n':path', '/ready'\n':method', 'GET'\n"
        "'user-agent', 'curl/7.88.1'\n'accept', '*/*'"
    )
    # The dump's six lines and the blank one after it belong to the record: the next row starts after them.
    assert df.loc[df["line_no"] > line_no, "line_no"].iloc[0] == line_no + 7


def test_tags_with_connection_only_leave_stream_null():
    df = parse_envoy_log(DEFAULT)
    row = _row(df, _first_line(df, "new connection from 127.0.0.1:60262"))
    assert row["connection_id"] == 1
    assert pd.isna(row["stream_id"])
    assert row["logger"] == "conn_handler"
    assert row["message"] == "new connection from 127.0.0.1:60262"


def test_older_bracket_ids_and_external_envoy_sources():
    df = parse_envoy_log(BRACKETS)
    _check_frame(df)
    assert df.attrs["unparsed"] == 0
    assert df["source"].str.startswith("external/envoy/source/").all()
    row = _row(df, _first_line(df, "request headers complete (end_stream=true):\n':authority', 'www.lyft.com'"))
    assert (row["connection_id"], row["stream_id"]) == (4, 307057819503423762)
    assert row["timestamp"] == pd.Timestamp("2021-03-01 10:00:00.421")
    assert not row["message"].startswith("[C")
    # The same traffic in both styles gives the same ids.
    new = parse_envoy_log(DEFAULT)
    assert new["stream_id"].dropna().unique().tolist() == df["stream_id"].dropna().unique().tolist()


def test_istio_format_reads_thread_from_the_tail():
    df = parse_envoy_log(ISTIO)
    _check_frame(df)
    assert df.attrs["unparsed"] == 0
    assert df["thread"].notna().all()
    assert not df["message"].str.contains("thread=").any()
    assert "envoy http" not in set(df["logger"])
    row = _row(df, _first_line(df, "':authority', 'www.lyft.com'"))
    assert row["logger"] == "http" and row["level"] == "debug"
    assert row["thread"] == 13502
    assert row["timestamp"] == pd.Timestamp("2026-11-26 06:09:48.105673")
    assert (row["connection_id"], row["stream_id"]) == (4, 18064777106710501561)
    assert row["message"].endswith("'accept', '*/*'")


def test_istio_single_line_record():
    text = (
        "2024-01-15T10:00:00.123456Z\tdebug\tenvoy http external/envoy/source/common/http/conn_manager_impl.cc:329"
        "\t[C5][S123] new stream\tthread=21\n"
    )
    row = parse_envoy_log(text).iloc[0]
    assert (row["logger"], row["thread"], row["connection_id"], row["stream_id"]) == ("http", 21, 5, 123)
    assert row["source"] == "external/envoy/source/common/http/conn_manager_impl.cc:329"
    assert row["message"] == "new stream"


def test_json_capture_mixes_default_lines_then_json():
    df = parse_envoy_log(JSON)
    _check_frame(df)
    assert df.attrs["unparsed"] == 0
    assert df["level"].notna().all()
    first, later = df.iloc[0], _row(df, _first_line(df, "enforced denied, matched policy none"))
    assert first["message"].startswith(
        "initializing epoch 0"
    )  # Envoy logs in its default format until the bootstrap is read
    assert later["logger"] == "rbac" and later["thread"] == 13629
    assert later["source"] == "source/extensions/filters/http/rbac/rbac_filter.cc:233"
    headers = _row(df, _first_line(df, "':authority', 'www.lyft.com'"))
    assert (headers["connection_id"], headers["stream_id"]) == (4, 3852927472019028863)
    assert headers["message"].endswith("'accept', '*/*'")


def test_json_alternative_keys_and_ids_in_the_message():
    text = (
        '{"time":"2026-11-26T06:10:01.123Z","thread":1234,"level":"debug","name":"http",'
        '"file":"source/common/http/conn_manager_impl.cc","line":393,"msg":"[C5][S18446744073709551615] new stream"}\n'
    )
    row = parse_envoy_log(text).iloc[0]
    assert row["timestamp"] == pd.Timestamp("2026-11-26 06:10:01.123")
    assert (row["thread"], row["logger"], row["source"]) == (
        1234,
        "http",
        "source/common/http/conn_manager_impl.cc:393",
    )
    assert (row["connection_id"], row["stream_id"]) == (5, 18446744073709551615)
    assert row["message"] == "new stream"


def test_stream_ids_above_2_63_are_exact():
    ids = [11844475217532491040, 18446744073709551615, 9223372036854775808]
    text = "".join(
        "[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] "
        f'[Tags: "ConnectionId":"5","StreamId":"{i}"] x\n'
        for i in ids
    )
    df = parse_envoy_log(text)
    assert str(df["stream_id"].dtype) == "UInt64"
    assert [int(v) for v in df["stream_id"]] == ids


def test_unusual_tags_and_microseconds_take_the_slow_path_with_the_same_answer():
    text = (
        "[2026-11-26 06:10:01.123456][7][debug][http] [source/common/http/conn_manager_impl.cc:393] "
        '[Tags: "ConnectionId":"5","StreamId":"6"] a\n'
        "[2026-11-26 06:10:01.124][7][debug][http] [source/common/http/conn_manager_impl.cc:393] "
        '[Tags: "StreamId":"6","ConnectionId":"5"] b\n'
    )
    df = parse_envoy_log(text)
    assert df["timestamp"].tolist() == [
        pd.Timestamp("2026-11-26 06:10:01.123456"),
        pd.Timestamp("2026-11-26 06:10:01.124"),
    ]
    assert df["connection_id"].tolist() == [5, 5] and df["stream_id"].tolist() == [6, 6]
    assert df["message"].tolist() == ["a", "b"]


# ---------------------------------------------------------------- lines that are no record

MIXED = (
    b"garbage before the first record\n"
    b"[2026-11-26 06:10:01.123][21][debug][http] [source/common/http/conn_manager_impl.cc:393] "
    b'[Tags: "ConnectionId":"5","StreamId":"11844475217532491040"] request headers complete (end_stream=true):\n'
    b"':authority', 'www.google.com'\n"
    b"':path', '/'\n"
    b"\n"
    b"2024-01-15T10:00:00.000000Z\tinfo\tsome other program\n"
    b"a line after the other program's\n"
    b"[2026-11-26 06:1\n"
    b"[2026-11-26 06:10:01.124][21][debug][http] [source/common/htt\n"
    b"{\n"
    b'{"level":"info","time":"2024-01-15T10:00:00Z","msg":"pilot-agent, no logger"}\n'
    b"\xff\xfe not utf-8 \xc3\n"
    b"[2026-11-26 06:10:01.125][22][debug][rbac] [source/extensions/filters/http/rbac/rbac_filter.cc:218] "
    b"checking request: sourceIP: 198.18.0.2:43210\n"
    b"bad bytes \xff inside a record\n"
)


def test_non_record_lines_are_rows_of_their_own():
    df = parse_envoy_log(MIXED)
    _check_frame(df)
    orphans = df[df["level"].isna()]
    assert df.attrs["unparsed"] == len(orphans) == 8
    assert orphans["timestamp"].isna().all() and orphans["connection_id"].isna().all()
    assert orphans["message"].tolist() == [
        "garbage before the first record",
        "2024-01-15T10:00:00.000000Z\tinfo\tsome other program",
        "a line after the other program's",
        "[2026-11-26 06:1",
        "[2026-11-26 06:10:01.124][21][debug][http] [source/common/htt",
        "{",
        '{"level":"info","time":"2024-01-15T10:00:00Z","msg":"pilot-agent, no logger"}',
        "\ufffd\ufffd not utf-8 \ufffd",
    ]
    assert orphans["line_no"].tolist() == [1, 6, 7, 8, 9, 10, 11, 12]
    records = df[df["level"].notna()]
    assert records["message"].tolist() == [
        "request headers complete (end_stream=true):\n':authority', 'www.google.com'\n':path', '/'",
        "checking request: sourceIP: 198.18.0.2:43210\nbad bytes \ufffd inside a record",
    ]
    assert records["line_no"].tolist() == [2, 13]


@pytest.mark.parametrize("empty", ["", b"", io.BytesIO(b""), io.StringIO("")])
def test_empty_input_gives_an_empty_typed_frame(empty):
    df = parse_envoy_log(empty)
    assert df.empty
    _check_frame(df)
    assert df.attrs["unparsed"] == 0


def test_random_bytes_never_raise():
    rng = random.Random(7)
    alphabet = b'[]{}\n\t "0123456789-:.TZCS' + bytes(range(256))
    for _ in range(30):
        blob = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        df = parse_envoy_log(blob + MIXED[: rng.randint(0, len(MIXED))])
        _check_frame(df)


def test_bad_bytes_inside_a_header_the_regex_path_reads_never_raise():
    """Lines the numpy path leaves to the regexes (unusual tags, Istio) may hold non-UTF-8 bytes too."""
    tags = b'[2026-11-26 06:10:01.123][7][debug][http] [a.cc:3] [Tags: "Conn\xdaId":"1"] x\n'
    istio = b"2026-11-26T06:10:01.123456Z\tdebug\tenvoy http sour\xabe.cc:3\tnew stream\tthread=7\n"
    df = parse_envoy_log(tags + istio)
    assert df["level"].tolist() == ["debug", "debug"] and df.attrs["unparsed"] == 0
    assert df.loc[1, "source"] == "sour\ufffde.cc:3" and df.loc[1, "thread"] == 7
    json_thread = '{"timestamp":"2026-11-26T06:10:01Z","level":"debug","logger":"http","thread":"\u00b2"}'
    assert parse_envoy_log(json_thread).loc[0, "thread"] is pd.NA  # "²" is a digit to str.isdigit, not to int()


# ---------------------------------------------------------------- inputs and blocks


def test_every_kind_of_source_gives_the_same_frame(tmp_path):
    expected = parse_envoy_log(DEFAULT)
    text = DEFAULT.read_text()
    for source in (str(DEFAULT), text, text.encode(), io.StringIO(text), io.BytesIO(text.encode())):
        pd.testing.assert_frame_equal(parse_envoy_log(source), expected)
    with open(DEFAULT, encoding="utf-8") as f:
        pd.testing.assert_frame_equal(parse_envoy_log(f), expected)


def test_a_str_that_names_no_file_is_log_text():
    df = parse_envoy_log("missing.log")
    assert df["message"].tolist() == ["missing.log"] and df.attrs["unparsed"] == 1


@pytest.mark.parametrize("block", [64, 1000, 4096])
def test_small_blocks_never_split_a_record(monkeypatch, block):
    """Blocks smaller than one record, and boundaries anywhere, change nothing."""
    expected = {source: parse_envoy_log(source) for source in (DEFAULT, ISTIO, MIXED)}
    monkeypatch.setattr(logparse, "_BLOCK", block)
    for source, frame in expected.items():
        pd.testing.assert_frame_equal(parse_envoy_log(source), frame)


def test_vectorised_path_matches_the_regex_path(monkeypatch):
    """Envoy's default format is read by numpy; the regex path must give the very same frame."""
    expected = {source: parse_envoy_log(source) for source in (DEFAULT, BRACKETS, MIXED, MIXED_FILE)}
    vectorised = logparse._default_headers

    def regex_only(*args):
        found = vectorised(*args)
        return found._replace(ok=np.zeros_like(found.ok))

    monkeypatch.setattr(logparse, "_default_headers", regex_only)
    for source, frame in expected.items():
        pd.testing.assert_frame_equal(parse_envoy_log(source), frame)


_HEAD = "[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] "
# Lines the numpy path must read exactly as the regexes do, or leave to them: what real files carry around records.
EDGES = [
    b"root@gw:~# kubectl logs deploy/egress -c istio-proxy | tail -n 50\n",  # a shell prompt
    b'{"start_time":"2026-11-26T06:09:47.414Z","response_code":"200","authority":"www.lyft.com"}\n',  # access log
    b'[2026-11-26T06:09:47.414Z] "GET / HTTP/1.1" 200 - 0 1 2 1 "-" "curl/8.5.0" "x" "www.lyft.com" "10.0.0.2:80"\n',
    b"\n",
    b"\n\n",  # blank lines, inside and outside records
    b"[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_ma\n",  # cut off inside the source
    b"[2026-11-26 06:10:01.12",  # cut off inside the timestamp, no newline at the end of the file
    b"[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] \xff\xfe bad\n",
    b"':path', '/caf\xc3\xa9\xff'\n",  # a header line with UTF-8 and a bad byte
    b"[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] [C5][S6] crlf\r\n",
    b"':authority', 'www.lyft.com'\r\n\r\n",  # CRLF line ends
    b"[2026-02-30 06:10:01.123][7][debug][http] [a.cc:1] February 30\n",  # dates pandas rejects: the regexes
    b"[2026-11-26 06:10:60.123][7][debug][http] [a.cc:1] a leap second\n",
    b"[2024-02-29 23:59:59.999][7][debug][http] [a.cc:1] a leap day\n",
    b"[2026-11-26 06:10:01.123456][7][debug][http] [a.cc:1] microseconds\n",
    b"[2026-11-26 06:10:01.123][7][WARN][http] [a.cc:1] a level in capitals\n",
    b"[2026-11-26 06:10:01.123][7][warn][http] [a.cc:1] warn is warning\n",
    b"[2026-11-26 06:10:01.123][7][debug][http] [a.cc:1]\n",  # no message at all
    b"[2026-11-26 06:10:01.123][7][debug][http] [source/caf\xc3\xa0/a\x85.cc:1] UTF-8 and a bad byte in the source\n",
    b"[2026-11-26 06:10:01.123][7][debug][http] external/envoy/source/common/http/conn_manager_impl.cc:187] old\n",
    b"2024-04-24T01:32:42.812279Z\tdebug\tenvoy rbac external/envoy/rbac_filter.cc:114\tchecking\tthread=15\n",
    b'{"level":"debug","time":"2026-11-26T06:10:01.123Z","scope":"envoy http","msg":"json","thread":7}\n',
] + [
    _HEAD.encode() + ids + b" x\n"
    for ids in (
        b"[C5][S6]",
        b"[C99999999999999999999][S1]",  # ids above 2**64 - 1 are null, as the regexes read them
        b"[C5][S18446744073709551615]",
        b"[C5][S18446744073709551616]",
        b"[C5][S12x]",
        b"[C5x]",
        b"[C5][S]",
        b"[C][S1]",
        b'[Tags: "ConnectionId":"99999999999999999999"]',
        b'[Tags: "ConnectionId":"5","StreamId":"18446744073709551616"]',
        b'[Tags: "StreamId":"6","ConnectionId":"5"]',
        b'[Tags: "ConnectionId":"5"',
        b"[Tags: ]",
    )
]


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_path_matches_the_regex_path_on_mixed_lines(seed):
    """Records between prompts, access-log lines, cut-off lines, bad bytes and CRLF: both paths, one frame."""
    rng = random.Random(seed)
    record = DEFAULT.read_bytes().splitlines(keepends=True)
    lines = [rng.choice(EDGES) if rng.random() < 0.3 else rng.choice(record) for _ in range(400)]
    text = b"".join(lines)
    fast = parse_envoy_log(text)
    _check_frame(fast)
    pd.testing.assert_frame_equal(parse_envoy_log(text, fast=False), fast)
    assert fast["format"].eq("envoy").sum() > 100  # the numpy path did read most records


def test_fast_false_is_the_regex_path_and_agrees():
    """``fast=False`` reads every line with the family regexes: same frame, and it really skips numpy."""
    for source in (DEFAULT, BRACKETS, MIXED_FILE):
        pd.testing.assert_frame_equal(parse_envoy_log(source, fast=False), parse_envoy_log(source))
    # A line only numpy's header reader would take differently shows the switch is real:
    assert parse_envoy_log(DEFAULT, fast=False)["format"].eq("envoy").all()


# ---------------------------------------------------------------- RBAC


def _header(ts: str, thread: int, logger: str, source: str) -> str:
    return f"[2026-11-26 06:10:{ts}][{thread}][debug][{logger}] [{source}] "


HCM = "source/common/http/conn_manager_impl.cc:1560"
HTTP_RBAC = "source/extensions/filters/http/rbac/rbac_filter.cc:221"


def test_rbac_verdicts_follow_their_thread_not_the_line_before():
    big = 17390778330029367251
    text = "".join(
        [
            _header("01.001", 21, "http", HCM)
            + f'[Tags: "ConnectionId":"1","StreamId":"{big}"] request headers complete (end_stream=true):\n',
            "':authority', 'www.google.com'\n\n",
            _header("01.002", 22, "http", HCM)
            + '[Tags: "ConnectionId":"2","StreamId":"42"] request headers complete (end_stream=true):\n',
            "':authority', 'www.lyft.com'\n\n",
            _header("01.003", 22, "rbac", HTTP_RBAC) + "enforced denied, matched policy none\n",
            _header("01.004", 21, "rbac", HTTP_RBAC) + "shadow denied, matched policy shadow-deny-lyft\n",
            _header("01.005", 21, "rbac", HTTP_RBAC) + "enforced allowed, matched policy allow-listed\n",
            _header("01.006", 22, "rbac", HTTP_RBAC) + "enforced denied\n",  # older releases name no policy
        ]
    )
    got = rbac_decisions(parse_envoy_log(text))
    assert got[["connection_id", "stream_id", "decision", "policy", "thread"]].values.tolist() == [
        [2, 42, "denied", None, 22],
        [1, big, "shadow denied", "shadow-deny-lyft", 21],
        [1, big, "allowed", "allow-listed", 21],
        [2, 42, "denied", None, 22],
    ]
    assert got["filter"].eq("http").all()


def test_rbac_in_the_real_capture():
    got = rbac_decisions(parse_envoy_log(DEFAULT))
    enforced = got[~got["decision"].str.startswith("shadow")]
    assert enforced[["connection_id", "decision", "policy", "filter"]].values.tolist() == [
        [1, "allowed", "allow-listed", "http"],
        [4, "denied", None, "http"],
        [5, "allowed", "allow-listed", "http"],
        [5, "allowed", "allow-listed", "http"],
        [6, "denied", None, "http"],
        [7, "allowed", "allow-listed", "http"],
        [9, "denied", None, "network"],
    ]
    # The www.lyft.com request (connection 4) is the one denied; its shadow verdict names the shadow policy.
    lyft = got[got["connection_id"] == 4]
    assert lyft["stream_id"].tolist() == [307057819503423762] * 2
    assert lyft["policy"].tolist() == ["shadow-deny-lyft", None]
    # Connection 9 went through the network RBAC filter: no stream, and not the
    # upstream connection (10) nor Envoy's own accept (11) logged just before.
    assert got["stream_id"].iloc[-1] is pd.NA


def test_rbac_old_wording_has_no_policy():
    got = rbac_decisions(parse_envoy_log(BRACKETS))
    assert got["policy"].isna().all()
    assert got["decision"].value_counts().to_dict() == {
        "shadow allowed": 4,
        "allowed": 4,
        "shadow denied": 2,
        "denied": 3,
    }


# ---------------------------------------------------------------- responses and connections


def test_responses_are_what_the_client_got():
    df = parse_envoy_log(DEFAULT)
    got = responses(df)
    assert got["status"].tolist() == [200, 200, 200, 403, 200, 200, 200, 200, 403, 503]
    assert len(got) == df["message"].str.startswith("encoding headers via codec").sum()
    upstream_lines = set(df.loc[df["message"].str.startswith("upstream headers complete"), "line_no"])
    assert upstream_lines and not upstream_lines & set(got["line_no"])
    assert got.loc[got["connection_close"], "connection_id"].tolist() == [6]
    assert got.loc[got["status"] == 503, "connection_id"].tolist() == [7]
    assert str(got["status"].dtype) == "Int64"


def test_connections_in_the_real_capture():
    got = connections(parse_envoy_log(DEFAULT)).set_index("connection_id")
    assert got.loc[1, "direction"] == "downstream" and got.loc[1, "remote_address"] == "127.0.0.1:60262"
    assert got.loc[1, "upstream_connection_id"] == 2
    assert got.loc[2, "direction"] == "upstream" and got.loc[2, "remote_address"] == "127.0.0.1:19081"
    assert (
        got.loc[5, "streams"] == 2 and got.loc[5, "upstream_connection_id"] == 2
    )  # keep-alive: both requests reuse C2
    assert got.loc[6, "close_reason"] == "local close; connection close header"
    assert got.loc[8, "close_reason"] == "remote close; delayed connect error: Connection refused"
    assert got.loc[9, "upstream_connection_id"] == 10  # tcp_proxy logs the same "Attached ..." line
    assert got.loc[0, "closed"] - got.loc[0, "opened"] == pd.Timedelta("0ms")
    assert got["opened"].notna().all()


def test_connections_fall_back_to_pool_ready_in_old_logs():
    got = connections(parse_envoy_log(BRACKETS)).set_index("connection_id")
    assert got.loc[[1, 5], "upstream_connection_id"].tolist() == [2, 2]


def test_summary_counts():
    got = summary(parse_envoy_log(DEFAULT))["value"]
    assert got["records"] == 289 and got["unparsed lines"] == 0
    assert got["rbac allowed"] == 4 and got["rbac denied"] == 3
    assert got["responses 200"] == 7 and got["responses 403"] == 2 and got["responses 503"] == 1
    assert got["connections"] == 12


def test_analysis_of_an_empty_log():
    df = parse_envoy_log("")
    assert rbac_decisions(df).empty and responses(df).empty and connections(df).empty
    assert summary(df)["value"]["records"] == 0


# ---------------------------------------------------------------- access log


def test_access_log_capture():
    got = parse_access_log(ACCESS)
    assert list(got.columns)[: len(ACCESS_LOG_FORMAT)] == list(ACCESS_LOG_FORMAT)
    assert got.attrs["unparsed"] == 0
    assert got["authority"].tolist() == [
        "www.google.com",
        "www.lyft.com",
        "www.google.com",
        "www.google.com",
        "www.lyft.com",
        "www.google.com",
    ]
    assert got["response_code"].tolist() == [200, 403, 200, 200, 403, 503]
    assert got["response_code_details"].iloc[1] == "rbac_access_denied_matched_policy[none]"
    assert got["upstream_connection_id"].iloc[1] is pd.NA  # Envoy prints 0 when no upstream was used
    assert got["upstream_connection_id"].iloc[0] == 2
    assert got["start_time"].iloc[0] == pd.Timestamp("2026-11-26 06:09:47.415")
    assert {str(got[c].dtype) for c in ("connection_id", "upstream_connection_id")} == {"UInt64"}
    assert {str(got[c].dtype) for c in ("response_code", "duration_ms", "bytes_received", "bytes_sent")} == {"Int64"}


def test_access_log_from_text_and_binary_file_objects():
    text = ACCESS.read_text()
    expected = parse_access_log(ACCESS)
    for source in (io.StringIO(text), io.BytesIO(text.encode()), text):
        pd.testing.assert_frame_equal(parse_access_log(source), expected)


def test_access_log_skips_and_counts_other_lines():
    text = (
        '{"start_time":"2026-11-26T06:09:47.414Z","connection_id":18446744073709551615,"response_code":"200"}\n'
        "not json\n[1,2]\n\n"
    )
    got = parse_access_log(text)
    assert got.attrs["unparsed"] == 2
    assert got["connection_id"].tolist() == [18446744073709551615]
    assert got["response_code"].tolist() == [200]
    assert got["line_no"].tolist() == [1]


def test_access_log_format_operators_are_envoys():
    assert ACCESS_LOG_FORMAT["upstream_connection_id"] == "%UPSTREAM_CONNECTION_ID%"
    assert ACCESS_LOG_FORMAT["authority"] == "%REQ(:AUTHORITY)%"
    assert all(v.startswith("%") and v.endswith("%") for v in ACCESS_LOG_FORMAT.values())


# ---------------------------------------------------------------- every family, per line


def test_every_family_names_its_format():
    expected = {
        DEFAULT: {"envoy"},
        BRACKETS: {"envoy"},
        ISTIO: {"istio"},
        ISTIO_PASTED: {"istio"},
        SHORT: {"istio"},
        JSON: {"envoy", "envoy-json"},
        JSON_V: {"envoy-json"},
        ISTIO_JSON: {"istio-json"},
        LEGACY: {"envoy-1.7"},
        EPOCH: {"istio-1.4"},
    }
    for path, formats in expected.items():
        df = parse_envoy_log(path)
        _check_frame(df)
        assert set(df["format"].dropna()) == formats, path.name
        assert df["format"].isna().eq(df["level"].isna()).all(), path.name
        assert not df["level"].isin(["warn"]).any(), path.name


def test_pasted_istio_log_reads_like_the_tabbed_capture():
    """Tabs turned into runs of spaces (a paste) change nothing but the whitespace."""
    tabs, spaces = parse_envoy_log(ISTIO), parse_envoy_log(ISTIO_PASTED)
    assert spaces.attrs["unparsed"] == 0
    same = ["timestamp", "thread", "level", "logger", "source", "connection_id", "stream_id", "line_no"]
    pd.testing.assert_frame_equal(spaces[same], tabs[same])
    assert [m.split() for m in spaces["message"]] == [m.split() for m in tabs["message"]]
    assert rbac_decisions(spaces)["decision"].tolist() == rbac_decisions(tabs)["decision"].tolist()


def test_istio_short_forms_without_source_or_thread():
    df = parse_envoy_log(SHORT)
    first = _row(df, 3)  # 2021-08-03T06:46:35.297256Z trace   envoy http  [C355666][S...] decode headers called
    assert (first["level"], first["logger"], first["connection_id"]) == ("trace", "http", 355666)
    assert first["stream_id"] == 10909270796817708085 and pd.isna(first["source"]) and pd.isna(first["thread"])
    assert first["message"].startswith("decode headers called")
    assert _row(df, 11)["level"] == "warning"
    # Istio's own lines (no "envoy " scope), a shell prompt and a line cut inside its timestamp are no records.
    assert df.loc[df["level"].isna(), "line_no"].tolist() == [1, 2, 12]
    # A source glued to its ids (a lost tab) still splits: "filter_manager.cc:572[Tags: ...".
    glued = _row(df, 16)
    assert glued["source"] == "external/envoy/source/common/http/filter_manager.cc:572"
    assert (glued["thread"], glued["connection_id"], glued["stream_id"]) == (43, 314711, 11702537024555385627)
    assert glued["message"] == "decode headers called: filter=istio.stats status=0"


def test_rbac_policy_names_with_brackets_and_no_thread():
    got = rbac_decisions(parse_envoy_log(SHORT)).set_index("line_no")
    policy = "ns[foo]-policy[deny-path-headers]-rule[0]"
    assert got.loc[8, ["decision", "policy", "filter"]].tolist() == ["shadow denied", policy, "http"]
    assert got.loc[9, ["decision", "policy", "filter"]].tolist() == ["denied", policy, "http"]
    # No thread printed: the whole log counts as one thread, so the verdict goes to the last stream logged.
    assert (got.loc[9, "connection_id"], got.loc[9, "stream_id"]) == (355666, 10909270796817708085)
    # "matched policy none" is no policy; after "checking connection" with no source, the network filter.
    assert got.loc[14, ["decision", "filter"]].tolist() == ["allowed", "network"]
    assert got.loc[14, "policy"] is None and got.loc[14, "stream_id"] is pd.NA


def test_istio_json_capture():
    df = parse_envoy_log(ISTIO_JSON)
    assert df.attrs["unparsed"] == 0 and df["thread"].notna().all()
    assert "envoy http" not in set(df["logger"]) and "http" in set(df["logger"])
    row = _row(df, _first_line(df, "new connection from"))
    assert row["connection_id"] == 0 and row["message"].startswith("new connection from 127.0.0.1:")
    assert row["source"] == "source/common/listener_manager/active_tcp_listener.cc:162"
    assert row["timestamp"].microsecond != 0  # %f: microseconds kept
    got = rbac_decisions(df)
    lyft = got[got["policy"].fillna("").str.startswith("ns[")]
    assert lyft[["decision", "policy"]].values.tolist() == [["shadow denied", "ns[foo]-policy[deny-lyft]-rule[0]"]]
    assert responses(df)["status"].tolist() == [200, 200, 200, 403, 503]
    assert got.loc[got["filter"] == "network", "decision"].tolist() == ["denied"]


def test_istio_json_other_scopes_are_no_records():
    text = (
        '{"level":"info","time":"2024-04-24T01:32:42.812279Z","scope":"xdsproxy","msg":"connected to upstream"}\n'
        '{"level":"warn","time":"2024-04-24T01:32:42.9Z","scope":"envoy main","msg":"no limit",'
        '"caller":"source/server/server.cc:747","thread":15}\n'
    )
    df = parse_envoy_log(text)
    assert df["level"].tolist()[1] == "warning" and pd.isna(df["level"].iloc[0])
    assert df.loc[1, ["logger", "thread", "format"]].tolist() == ["main", 15, "istio-json"]


def test_json_with_v_message_that_breaks_the_json():
    """A %v layout: the [Tags] quotes and a header dump break the JSON; the record still reads, ids included."""
    df = parse_envoy_log(JSON_V)
    assert df.attrs["unparsed"] == 0
    row = _row(df, _first_line(df, "encoding headers via codec"))
    assert (row["connection_id"], row["stream_id"], row["logger"]) == (0, 12808375883011824292, "http")
    assert row["message"].startswith("encoding headers via codec (end_stream=false):\n':status', '200'")
    assert not row["message"].endswith('"}') and "Tags" not in row["message"]
    assert responses(df)["status"].tolist() == [200, 200, 200, 403, 503]


def test_envoy_1_7_location_without_bracket_and_one_record_per_header():
    df = parse_envoy_log(LEGACY)
    assert df.attrs["unparsed"] == 0
    row = _row(df, 4)
    assert row["source"] == "external/envoy/source/common/http/conn_manager_impl.cc:452"
    assert (row["connection_id"], row["stream_id"]) == (1, 4168112432581539207)
    assert row["message"] == "request headers complete (end_stream=true):"
    assert _row(df, 5)["message"] == "  ':authority':'www.lyft.com'"
    assert _row(df, 13)["message"].endswith("':method', 'GET'\n, dynamicMetadata:")  # continuation lines folded
    # The status comes from the header record of the same stream, not from the async side-stream's ':status':'200'.
    got = responses(df)
    assert got[["connection_id", "status"]].values.tolist() == [[1, 403], [2, 200]]
    verdicts = rbac_decisions(df)
    got = verdicts[["connection_id", "decision", "policy"]].values.tolist()
    assert got == [[1, "denied", None], [2, "allowed", None]]


def test_istio_1_4_epoch_prefix():
    df = parse_envoy_log(EPOCH)
    row = _row(df, 2)
    assert (row["thread"], row["level"], row["logger"], row["format"]) == (22, "debug", "filter", "istio-1.4")
    assert row["message"] == "original_dst: New connection accepted"
    assert row["timestamp"] == pd.Timestamp("2020-02-11 16:04:50.792")
    # pilot-agent's lines and the access-log line are no records
    assert df.loc[df["level"].isna(), "line_no"].tolist() == [1, 18, 19]
    assert rbac_decisions(df)[["connection_id", "decision"]].values.tolist() == [[31, "denied"]]
    assert responses(df)["status"].tolist() == [403]


def test_mixed_paste_with_bad_bytes_and_cut_lines():
    df = parse_envoy_log(MIXED_FILE)
    _check_frame(df)
    assert df["format"].dropna().tolist() == ["envoy", "envoy", "envoy", "istio", "envoy"]
    headers = _row(df, 4)
    assert headers["message"].splitlines()[1:] == ["':authority', 'caf\u00e9.example'", "':path', '/\ufffd\ufffd'"]
    assert headers["stream_id"] == 18446744073709551615
    istio = _row(df, 9)
    assert (istio["thread"], istio["connection_id"], istio["stream_id"]) == (22, 8, 42)
    assert istio["message"] == "encoding headers via codec (end_stream=false):\n':status', '200'"
    # prompts, tail's banner, the access-log lines and a line cut inside its source are rows of their own
    orphans = df[df["level"].isna()]
    assert orphans["line_no"].tolist() == [1, 2, 16, 17, 18, 19]
    assert orphans["timestamp"].isna().all() and df.attrs["unparsed"] == 6
    assert responses(df)[["connection_id", "status"]].values.tolist() == [[8, 200], [7, 403]]
    assert rbac_decisions(df)["policy"].tolist() == ["ns[foo]-policy[deny-path-headers]-rule[0]"]


def test_family_regexes_each_read_their_sample_line():
    """The documented sample line of each family is read by that family's regex and no other."""
    samples = {
        "envoy": "[2026-11-26 06:10:01.123][7][debug][http] [source/common/http/conn_manager_impl.cc:393] "
        '[Tags: "ConnectionId":"5"] new stream',
        "envoy-1.7": "[2018-06-20 10:42:08.410][17][debug][http] "
        "external/envoy/source/common/http/conn_manager_impl.cc:187] [C12] new stream",
        "istio-1.4": "[Envoy (Epoch 0)] [2020-02-11 16:04:50.792][22][debug][filter] "
        "[external/envoy/source/original_dst.cc:18] original_dst: New connection accepted",
        "istio": "2024-04-24T01:32:42.812279Z\tdebug\tenvoy rbac external/envoy/source/rbac_filter.cc:114"
        "\tchecking request\tthread=15",
    }
    for family, line in samples.items():
        hits = [name for name, pattern in logparse.FAMILIES.items() if pattern.match("\n" + line)]
        assert hits == [family]
        assert parse_envoy_log(line)["format"].tolist() == [family]
