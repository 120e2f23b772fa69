"""Connections per request at the gateways, timing summaries, and the bench's table of configurations (pure)."""

import pandas as pd
import pytest

from bench import modes
from tproxy_nb.analysis import pool
from tproxy_nb.analysis.curl import timing_summary
from tproxy_nb.settings import Settings


def test_per_gateway_counts_what_moved_between_two_reads():
    before = {"igw": {"connections": 4, "requests": 4}, "igw_http": {"connections": 1, "requests": 3}}
    after = {"igw": {"connections": 6, "requests": 14}, "igw_http": {"connections": 1, "requests": 3}}
    rows = pool.per_gateway(before, after).set_index("gateway")
    assert rows.loc["igw"].to_dict() == {"requests": 10, "connections": 2, "connections_per_request": 0.2}
    # No request reached igw_http: no ratio, rather than a division by zero.
    assert rows.loc["igw_http", "requests"] == 0 and pd.isna(rows.loc["igw_http", "connections_per_request"])


def test_timing_summary_gives_median_and_iqr_in_milliseconds_per_group():
    df = pd.DataFrame({"case": ["a"] * 5 + ["b"], "time_total": [0.001, 0.002, 0.003, 0.004, 0.005, 0.010]})
    rows = timing_summary(df, ["case"]).set_index("case")
    assert rows.loc["a", ["median_ms", "q1_ms", "q3_ms", "iqr_ms", "n"]].tolist() == [3.0, 2.0, 4.0, 2.0, 5]
    assert rows.loc["b", "iqr_ms"] == 0 and list(rows.index) == ["a", "b"]


def test_the_bench_compares_direct_both_tunnels_and_tproxy():
    assert [c.name for c in modes.CONFIGS] == ["direct", "redirect+http1", "redirect+http2", "tproxy+http1"]


@pytest.mark.parametrize("config", modes.CONFIGS, ids=lambda c: c.name)
def test_each_configuration_is_valid_settings(config):
    assert Settings().replace(**config.changes).tunnel in ("http1", "http2")


def test_the_bench_table_sums_connections_over_rounds():
    df = pd.DataFrame({"config": ["c"] * 4, "case": ["x"] * 4, "time_total": [0.01] * 4, "outcome": ["allowed"] * 4})
    pools = pd.DataFrame(
        [
            {"config": "c", "case": "x", "gateway": g, "connections": n, "curl_requests": 2}
            for g, n in (("igw", 2), ("igw_http", 0), ("igw", 0), ("igw_http", 0))
        ]
    )
    (row,) = modes.table(df, pools).to_dict(orient="records")
    assert row["igw_connections_per_request"] == 0.5 and row["igw_http_connections_per_request"] == 0
    assert row["outcomes"] == {"allowed": 4} and row["median_ms"] == 10.0
