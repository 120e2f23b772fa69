"""The whole egress chain on the lab: provision, iptables, three Envoys, and the four outcomes."""

import pytest

from tproxy_nb.steps import check, envoy_proc, files, firewall, provision

pytestmark = pytest.mark.lab


def _outcomes(df):
    return dict(zip(df["case"], df["outcome"]))


def test_four_outcomes_as_the_service_user(host, chain):
    df = check.run_cases(host, chain, progress=False)
    assert _outcomes(df) == {
        "http allowed": "allowed",
        "http denied": "denied",
        "https allowed": "allowed",
        "https denied": "reset",
    }
    rows = df.set_index("case")
    assert (
        rows.loc["http allowed", "http_code"] == 200 and "Hello from www.google.com" in rows.loc["http allowed", "body"]
    )
    assert rows.loc["http denied", "http_code"] == 403
    assert "Hello from www.google.com" in rows.loc["https allowed", "body"]
    assert rows.loc["https denied", "exit_code"] == 35
    assert "reset by peer" in rows.loc["https denied", "error"]


def test_the_envoy_user_bypasses_the_chain(host, chain):
    df = check.run_cases(host, chain, as_user="envoy", progress=False)
    assert set(df["outcome"]) == {"allowed"}
    assert all("Hello from" in b for b in df["body"])


def test_the_gateway_log_holds_the_rbac_deny_and_the_403(host, chain):
    check.run_cases(host, chain, progress=False)
    text = envoy_proc.logs(host, chain, "igw")
    assert "enforced denied" in text
    assert "':status', '403'" in text and "'connection', 'close'" in text


def test_every_step_a_second_time_changes_nothing(host, chain):
    before = host.run("iptables-save -t nat | grep -v '^#'", sudo=True).stdout
    for plan in provision.provision(host, chain, dry_run=True):
        assert plan.empty, str(plan)
    assert firewall.plan_apply(host, chain).empty
    firewall.apply(host, chain, guard_seconds=None)
    assert envoy_proc.start(host, chain) == []  # all three already run: nothing started
    after = host.run("iptables-save -t nat | grep -v '^#'", sudo=True).stdout
    assert after == before
    assert after.count("-j ENVOY_EGRESS") == 1
    st = envoy_proc.status(host, chain)
    assert st["ready"].all() and st["pid"].is_unique


def test_allowing_lyft_flips_both_lyft_cases(host, chain):
    flipped = chain.replace(allowed_hosts=("www.google.com", "www.lyft.com"))
    try:
        files.plan_configs(host, flipped).apply(host)
        envoy_proc.stop(host, flipped)
        envoy_proc.start(host, flipped)
        df = check.run_cases(host, flipped, progress=False)
        rows = df.set_index("case")
        assert rows.loc["http denied", "http_code"] == 200 and rows.loc["https denied", "http_code"] == 200
        assert "Hello from www.lyft.com" in rows.loc["https denied", "body"]
    finally:
        files.plan_configs(host, chain).apply(host)
        envoy_proc.stop(host, chain)
        envoy_proc.start(host, chain)
    assert _outcomes(check.run_cases(host, chain, progress=False))["https denied"] == "reset"
