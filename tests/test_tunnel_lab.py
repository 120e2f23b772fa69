"""tunnel: http1 and http2 on the lab: the four outcomes over HTTP/2 tunnels, and what pools at igw.

One chain for the module (http1, the default); the HTTP/2 tests switch the sidecar (``chain.switch_tunnel``),
and it is switched back at the end. Connections and requests are igw's own counters
(``http.igw.downstream_cx_total`` and ``downstream_rq_total``), read before and after.
"""

import pytest

from tproxy_nb.analysis import pool
from tproxy_nb.analysis.curl import cases
from tproxy_nb.steps import chain as egress
from tproxy_nb.steps import check, envoy_proc

pytestmark = pytest.mark.lab

#: HTTPS requests per case in a pooling test: enough that one connection per CONNECT stands out.
N = 5


def _https(host, s, names, n=N) -> tuple[list[dict], dict]:
    """Make ``n`` rounds of the named HTTPS cases; return curl's records and igw's row of the pool table."""
    todo = [c for c in cases(s) if c.name in names]
    before = envoy_proc.gateway_counts(host, s)
    recs = [check.run_case(host, c, s.service.user) for _ in range(n) for c in todo]
    table = pool.per_gateway(before, envoy_proc.gateway_counts(host, s)).set_index("gateway")
    return recs, table.loc["igw"].to_dict()


def _workers(host) -> int:
    """Envoy's worker threads on the host: one per CPU (the Envoys run without --concurrency)."""
    return int(host.run(["nproc"]).stdout)


def test_http1_opens_one_connection_to_igw_per_connect(host, chain):
    recs, igw = _https(host, chain, ("https allowed", "https denied"))
    assert [r["outcome"] for r in recs] == ["allowed", "reset"] * N
    assert igw["requests"] == 2 * N and igw["connections"] == 2 * N, igw


@pytest.fixture(scope="module")
def http2(host, chain):
    s, _plan = egress.switch_tunnel(host, chain, "http2")
    try:
        yield s
    finally:
        egress.switch_tunnel(host, chain, "http1")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_four_outcomes_over_http2_tunnels(host, http2, family):
    df = check.run_cases(host, http2, progress=False, family=family)
    assert df["as_expected"].all(), df[["case", "outcome", "expected", "exit_code", "error"]].to_string()
    rows = df.set_index("case")
    assert "Hello from www.google.com" in rows.loc["https allowed", "body"]
    assert rows.loc["https denied", "exit_code"] == 35 and "reset by peer" in rows.loc["https denied", "error"]
    assert rows.loc["http denied", "http_code"] == 403
    assert all((":" in ip) == (family == "ipv6") for ip in df["remote_ip"])


def test_http2_pools_connects_and_a_denied_connect_leaves_the_pool_up(host, http2):
    workers = _workers(host)
    recs, mixed = _https(host, http2, ("https allowed", "https denied"))
    assert [r["outcome"] for r in recs] == ["allowed", "reset"] * N
    assert mixed["requests"] == 2 * N and mixed["connections"] <= workers, mixed
    # Denied CONNECTs only: each ends its own stream. Were the pooled connection closed with it, every
    # request would need a new one.
    recs, denied = _https(host, http2, ("https denied",))
    assert {r["outcome"] for r in recs} == {"reset"}
    assert denied["requests"] == N and mixed["connections"] + denied["connections"] <= workers, (mixed, denied)


def test_a_proxy_aware_client_gets_its_403_over_an_http2_tunnel(host, http2):
    rows = check.run_cases(host, http2, explicit_proxy=True, progress=False).set_index("case")
    assert rows.loc["https denied", "exit_code"] == 56
    assert "CONNECT tunnel failed, response 403" in rows.loc["https denied", "error"]
    assert "Hello from www.google.com" in rows.loc["https allowed", "body"]


def test_every_tls_deny_mode_works_over_http2_tunnels(host, http2):
    try:
        for mode in ("read-first", "sni", "deny-page"):
            s, _plan = egress.switch_sidecar(host, http2, tls_deny=mode)
            df = check.run_cases(host, s, progress=False)
            assert df["as_expected"].all(), (mode, df[["case", "outcome", "expected", "exit_code", "error"]])
    finally:
        egress.switch_sidecar(host, http2, tls_deny="reset")
