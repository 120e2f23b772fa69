"""The whole egress chain on the lab: provision, iptables, three Envoys, and the four outcomes."""

import dataclasses

import pytest

from tproxy_nb.analysis.curl import cases, curl_command, parse_output
from tproxy_nb.errors import StepError
from tproxy_nb.steps import chain as egress
from tproxy_nb.steps import check, envoy_proc, files, firewall, provision

pytestmark = pytest.mark.lab


def _outcomes(df):
    return dict(zip(df["case"], df["outcome"]))


@pytest.mark.parametrize("family", [None, "ipv4", "ipv6"])
def test_four_outcomes_as_the_service_user(host, chain, family):
    # None: curl's own choice, which on the dual-stack lab host is IPv6 first, as for a name with an AAAA record.
    df = check.run_cases(host, chain, progress=False, family=family)
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
    if family is not None:
        # curl's own record of where it connected: the family asked for, and never straight to a site.
        ips = set(df["remote_ip"])
        assert all((":" in ip) == (family == "ipv6") for ip in ips), ips


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_the_envoy_user_bypasses_the_chain(host, chain, family):
    df = check.run_cases(host, chain, as_user="envoy", progress=False, family=family)
    assert set(df["outcome"]) == {"allowed"}
    assert all("Hello from" in b for b in df["body"])


def _root_curl(host, url: str, flag: str) -> dict:
    cmd = curl_command(url, 10)
    cmd.insert(1, flag)
    r = host.run(cmd, sudo=True, check=False, timeout=30)
    return parse_output(r.stdout, r.stderr, r.exit_code)


def test_root_bypasses_the_chain_only_while_bypass_root_is_on(host, chain):
    denied = next(c.url for c in cases(chain) if c.name == "https denied")
    for flag in ("-4", "-6"):
        rec = _root_curl(host, denied, flag)
        assert rec["http_code"] == 200 and "Hello from www.lyft.com" in rec["body"], (flag, rec)
    strict = chain.replace(bypass=dataclasses.replace(chain.bypass, root=False))
    try:
        firewall.apply(host, strict, guard_seconds=None)
        for flag in ("-4", "-6"):
            rec = _root_curl(host, denied, flag)
            assert rec["exit_code"] == 35 and not rec.get("http_code"), (flag, rec)
    finally:
        firewall.apply(host, chain, guard_seconds=None)
    assert firewall.plan_apply(host, chain).empty


def test_rbac_verdicts_reach_the_gateway_log_once_switched_on_at_runtime(host, chain):
    envoy_proc.stop(host, chain, ["igw"])
    envoy_proc.start(host, chain, ["igw"])  # a fresh start: rbac at info, everything else at debug
    denied = next(c for c in cases(chain) if c.name == "https denied")

    def new_lines_after_a_denied_request():
        before = len(envoy_proc.logs(host, chain, "igw").splitlines())
        assert check.run_case(host, denied, chain.service.user)["outcome"] == "reset"
        return "\n".join(envoy_proc.logs(host, chain, "igw").splitlines()[before:])

    quiet = new_lines_after_a_denied_request()
    assert "rbac_access_denied" in quiet and "enforced denied" not in quiet
    assert envoy_proc.set_log_level(host, chain, "igw", "rbac", "debug")["rbac"] == "debug"
    loud = new_lines_after_a_denied_request()
    assert "enforced denied" in loud
    assert "':status', '403'" in loud and "'connection', 'close'" in loud
    with pytest.raises(StepError, match="no_such_logger"):
        envoy_proc.set_log_level(host, chain, "igw", "no_such_logger", "debug")


def test_every_step_a_second_time_changes_nothing(host, chain):
    nat = "iptables-save -t nat | grep -v '^#'; ip6tables-save -t nat | grep -v '^#'"
    before = host.run(nat, sudo=True).stdout
    for plan in provision.provision(host, chain, dry_run=True):
        assert plan.empty, str(plan)
    assert firewall.plan_apply(host, chain).empty
    firewall.apply(host, chain, guard_seconds=None)
    assert envoy_proc.start(host, chain) == []  # all three already run: nothing started
    after = host.run(nat, sudo=True).stdout
    assert after == before
    assert after.count("-j ENVOY_EGRESS") == 2  # one hook per family
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


def test_down_leaves_no_rule_in_either_family(host, chain):
    # Last in this module: the fixture's own down() afterwards then finds nothing to do.
    egress.down(host, chain)
    listing = host.run("iptables-save; ip6tables-save", sudo=True).stdout
    assert "tproxy-nb" not in listing and "ENVOY_EGRESS" not in listing
    assert firewall.show(host).empty and firewall.plan_remove(host).empty
