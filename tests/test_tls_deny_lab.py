"""The four tls_deny modes and the explicit proxy on the lab: what the client sees, the allowed sites unaffected.

One chain for the module; between modes only the sidecar restarts (``chain.switch_tls_deny``).
"""

import pytest

from tproxy_nb.steps import chain as egress
from tproxy_nb.steps import check, envoy_proc

pytestmark = pytest.mark.lab


def _rows(df):
    return df.set_index("case")


@pytest.mark.parametrize(
    "mode,exit_code,message",
    [
        ("read-first", 35, "SSL_ERROR_SYSCALL"),
        ("sni", 35, "SSL_ERROR_SYSCALL"),
        ("deny-page", 60, "SSL certificate problem"),
        ("reset", 35, "Connection reset by peer"),
    ],
)
def test_each_mode_changes_only_what_the_denied_https_client_sees(host, chain, mode, exit_code, message):
    s, _plan = egress.switch_tls_deny(host, chain, mode)
    df = check.run_cases(host, s, progress=False)
    assert df["as_expected"].all(), df[["case", "outcome", "expected", "exit_code", "error"]].to_string()
    rows = _rows(df)
    assert rows.loc["https denied", "exit_code"] == exit_code and message in rows.loc["https denied", "error"]
    assert "Hello from www.google.com" in rows.loc["https allowed", "body"]
    assert rows.loc["http denied", "http_code"] == 403
    assert set(df["mode"]) == {mode}
    st = envoy_proc.status(host, s).set_index("name")
    assert st["ready"].all()


def test_deny_page_shows_its_403_to_a_client_that_trusts_the_egress_ca(host, chain):
    s, _plan = egress.switch_tls_deny(host, chain, "deny-page")
    try:
        rows = _rows(check.run_cases(host, s, trust_egress_ca=True, progress=False))
        assert rows.loc["https denied", "outcome"] == "denied" and rows.loc["https denied", "http_code"] == 403
        assert "www.lyft.com is not on the egress allowlist" in rows.loc["https denied", "body"]
        assert "Hello from www.google.com" in rows.loc["https allowed", "body"]
    finally:
        egress.switch_tls_deny(host, chain, "reset")


def test_a_proxy_aware_client_is_told_403_to_its_connect(host, chain):
    rows = _rows(check.run_cases(host, chain, explicit_proxy=True, progress=False))
    assert rows.loc["https denied", "exit_code"] == 56
    assert "CONNECT tunnel failed, response 403" in rows.loc["https denied", "error"]
    assert rows.loc["https denied", "outcome"] == "denied"
    assert rows.loc["http denied", "http_code"] == 403
    assert "Hello from www.google.com" in rows.loc["https allowed", "body"]
    assert "Hello from www.google.com" in rows.loc["http allowed", "body"]


def test_switching_to_the_mode_in_place_restarts_nothing(host, chain):
    before = envoy_proc.pids(host, chain, "sidecar")
    _s, plan = egress.switch_tls_deny(host, chain, chain.tls_deny)
    assert plan.empty and envoy_proc.pids(host, chain, "sidecar") == before
