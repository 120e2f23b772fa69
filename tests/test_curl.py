"""curl: parsing its write-out, classifying outcomes, timing phases (pure)."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tproxy_nb.analysis import curl
from tproxy_nb.analysis.curl import MARKER, cases, classify, curl_command, parse_output, phases, to_frame, to_records
from tproxy_nb.settings import Settings


def test_four_cases_follow_the_settings():
    names = [(c.name, c.url, c.expected) for c in cases(Settings())]
    assert names == [
        ("http allowed", "http://www.google.com/", "allowed"),
        ("http denied", "http://www.lyft.com/", "denied"),
        ("https allowed", "https://www.google.com/", "allowed"),
        ("https denied", "https://www.lyft.com/", "reset"),
    ]
    flipped = cases(Settings().replace(allowed_hosts=("www.google.com", "www.lyft.com")))
    assert [c.expected for c in flipped] == ["allowed"] * 4


@pytest.mark.parametrize(
    "mode,https_denied", [("reset", "reset"), ("read-first", "closed"), ("sni", "closed"), ("deny-page", "untrusted")]
)
def test_each_tls_deny_mode_expects_what_the_client_sees(mode, https_denied):
    s = Settings().replace(tls_deny=mode)
    assert [c.expected for c in cases(s)] == ["allowed", "denied", "allowed", https_denied]
    # A proxy-aware client is refused its CONNECT with a 403, whatever the mode.
    assert [c.expected for c in cases(s, explicit_proxy=True)] == ["allowed", "denied", "allowed", "denied"]
    trusting = cases(s, trust_egress_ca=True)[3].expected
    assert trusting == ("denied" if mode == "deny-page" else https_denied)


def test_curl_command_through_the_explicit_proxy_trusting_only_the_ca_on_stdin():
    cmd = curl_command("https://www.lyft.com/", proxy="http://127.0.0.1:12008", cacert_stdin=True)
    assert cmd[cmd.index("-x") + 1] == "http://127.0.0.1:12008"
    assert cmd[:2] == ["sh", "-c"] and cmd[-1] == "https://www.lyft.com/"
    assert "-x" not in curl_command("http://www.google.com/")


def test_the_ca_on_stdin_is_a_whole_file_before_curl_starts_and_gone_after(tmp_path):
    cmd = curl_command("https://www.lyft.com/", cacert_stdin=True)
    # A stand-in for curl that reports what it was given as --cacert (always the last two arguments).
    probe = "import os, sys; p = sys.argv[-1]; print(sys.argv[-2], os.path.isfile(p), open(p).read(), p)"
    cmd[cmd.index("curl") :] = [sys.executable, "-c", probe]
    p = subprocess.run(cmd, input="-----PEM-----", capture_output=True, text=True, timeout=30)
    flag, regular, content, path = p.stdout.split()
    assert (p.returncode, flag, regular, content) == (0, "--cacert", "True", "-----PEM-----"), p
    assert not os.path.exists(path), "the CA's temporary file was left behind"


# Messages as curl 7.88.1 / OpenSSL 3.0 prints them (measured against the lab and local servers).
@pytest.mark.parametrize(
    "code,exit_code,error,outcome",
    [
        (200, 0, None, "allowed"),
        (204, 0, None, "allowed"),
        (403, 0, None, "denied"),
        (0, 35, "curl: (35) Recv failure: Connection reset by peer", "reset"),
        (0, 56, "curl: (56) Recv failure: Connection reset by peer", "reset"),
        (0, 35, "curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to www.lyft.com:443 ", "closed"),
        (0, 35, "curl: (35) error:0A000126:SSL routines::unexpected eof while reading", "closed"),
        (0, 52, "curl: (52) Empty reply from server", "closed"),
        (0, 56, "curl: (56) CONNECT tunnel failed, response 403", "denied"),
        (0, 60, "curl: (60) SSL certificate problem: unable to get local issuer certificate", "untrusted"),
        (0, 35, "curl: (35) error:0A000410:SSL routines::sslv3 alert handshake failure", "error"),
        (0, 7, "curl: (7) Failed to connect to www.lyft.com port 443 after 0 ms: Couldn't connect to server", "error"),
        (503, 0, None, "error"),
        (0, 28, "curl: (28) Operation timed out after 10001 milliseconds with 0 bytes received", "error"),
        # The exit code decides first: a message alone never makes an outcome.
        (0, 7, "curl: (7) Recv failure: Connection reset by peer", "error"),
        (0, 35, None, "error"),
        (0, 56, "curl: (56) CONNECT tunnel failed, response 407", "error"),
    ],
)
def test_classify(code, exit_code, error, outcome):
    assert classify(code, exit_code, error) == outcome


def _out(body, **info):
    return body + MARKER + json.dumps(info)


def test_parse_output_splits_body_and_json():
    rec = parse_output(_out("Hello from www.google.com\n", http_code=200, time_total=0.0123, local_port=40000), "", 0)
    assert rec["body"] == "Hello from www.google.com\n"
    assert rec["http_code"] == 200 and rec["local_port"] == 40000 and rec["error"] is None


def test_parse_output_keeps_the_error_of_a_reset():
    rec = parse_output(
        MARKER + json.dumps({"http_code": 0, "exitcode": 35}), "curl: (35) Recv failure: Connection reset by peer\n", 35
    )
    assert rec["exit_code"] == 35 and "reset by peer" in rec["error"]


def test_parse_output_keeps_curls_error_line_not_the_advice_after_it():
    stderr = (
        "curl: (60) SSL certificate problem: unable to get local issuer certificate\n"
        "More details here: https://curl.se/docs/sslcerts.html\n\n"
        "curl failed to verify the legitimacy of the server and therefore could not\n"
        "how to fix it, please visit the web page mentioned above.\n"
    )
    rec = parse_output(MARKER + json.dumps({"http_code": 0}), stderr, 60)
    assert rec["error"].startswith("curl: (60) SSL certificate problem")


def test_garbage_output_does_not_raise():
    rec = parse_output("\x00not json" + MARKER + "{broken", "", 0)
    assert rec["exit_code"] == 0 and "http_code" not in rec


def test_phases_are_derived_like_httpstat():
    df = to_frame(
        [
            {
                "case": "https allowed",
                "run": 0,
                "outcome": "allowed",
                "time_namelookup": 0.001,
                "time_connect": 0.003,
                "time_appconnect": 0.010,
                "time_pretransfer": 0.011,
                "time_starttransfer": 0.020,
                "time_total": 0.021,
            }
        ]
    )
    p = phases(df).iloc[0]
    assert p["dns"] == pytest.approx(1.0) and p["connect"] == pytest.approx(2.0)
    assert p["tls"] == pytest.approx(7.0) and p["server"] == pytest.approx(9.0) and p["transfer"] == pytest.approx(1.0)


def test_http_has_no_tls_phase():
    df = to_frame(
        [
            {
                "case": "http allowed",
                "time_namelookup": 0.001,
                "time_connect": 0.002,
                "time_appconnect": 0.0,
                "time_pretransfer": 0.002,
                "time_starttransfer": 0.004,
                "time_total": 0.004,
            }
        ]
    )
    assert phases(df).iloc[0]["tls"] == 0


def test_json_records_have_the_documented_fields():
    df = to_frame(
        [
            {
                "case": "http denied",
                "url": "http://www.lyft.com/",
                "outcome": "denied",
                "expected": "denied",
                "http_code": 403,
                "exit_code": 0,
                "error": None,
                "time_total": 0.002,
            }
        ]
    )
    rec = to_records(df)[0]
    assert rec["case"] == "http denied" and rec["http_code"] == 403 and rec["error"] is None
    assert rec["timings"]["time_total"] == 0.002
    json.dumps(rec)


def _timed(case_ms: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"case": case, "time_total": ms / 1000} for case, values in case_ms.items() for ms in values])


def test_time_difference_is_the_median_and_iqr_of_every_pairwise_difference():
    proxied = _timed({"http allowed": [3.0, 4.0], "https allowed": [50.0, 52.0, 60.0]})
    direct = _timed({"http allowed": [1.0, 2.0], "https allowed": [40.0]})
    got = curl.time_difference(proxied, direct, ("proxied", "direct")).set_index("case")
    assert list(got.index) == ["http allowed", "https allowed"]
    # http: 3-1, 3-2, 4-1, 4-2 = 2, 1, 3, 2 -> median 2, quartiles 1.75 and 2.25
    assert got.loc["http allowed", ["proxied ms", "direct ms"]].tolist() == pytest.approx([3.5, 1.5])
    assert got.loc["http allowed", ["difference ms", "q1 ms", "q3 ms"]].tolist() == pytest.approx([2.0, 1.75, 2.25])
    assert got.loc["http allowed", "pairs"] == 4
    assert got.loc["https allowed", ["difference ms", "q1 ms", "q3 ms"]].tolist() == pytest.approx([12.0, 11.0, 16.0])


def test_time_difference_of_a_case_missing_on_one_side_is_empty_not_an_error():
    got = curl.time_difference(_timed({"https denied": [5.0]}), _timed({"http allowed": [1.0]}))
    assert got["pairs"].tolist() == [0] and pd.isna(got["difference ms"].iloc[0])
    assert list(got.columns[:3]) == ["case", "a ms", "b ms"]
