"""interception: tproxy on the lab: the four outcomes in both families, the sidecar's one capability, clean removal."""

import subprocess
import sys

import pytest

from tproxy_nb.present import bundle
from tproxy_nb.render import envoy
from tproxy_nb.steps import chain as egress
from tproxy_nb.steps import check, envoy_proc
from tproxy_nb.steps import firewall as ipt

pytestmark = pytest.mark.lab

#: Someone else's mangle rule and ip rule, there before the chain: both must still be there after it.
FOREIGN_MANGLE = ["-A", "PREROUTING", "-i", "tpx-nowhere", "-p", "udp", "-j", "MARK", "--set-xmark", "0x1/0xffffffff"]
FOREIGN_RULE = ["priority", "500", "fwmark", "0x1", "lookup", "100"]
CAP_NET_ADMIN = 1 << 12


def _foreign(host, verb: str) -> None:
    for family in ("", "6"):
        flag = ["-D" if verb == "del" else "-I", *FOREIGN_MANGLE[1:]]
        host.run([f"ip{family}tables", "-t", "mangle", *flag], sudo=True, check=verb == "add", timeout=30)
        host.run(["ip", f"-{family or 4}", "rule", verb, *FOREIGN_RULE], sudo=True, check=verb == "add", timeout=30)


def _listing(host) -> str:
    return host.run(
        "iptables-save -t mangle; ip6tables-save -t mangle; ip -4 rule; ip -6 rule; "
        "ip -4 route show table all; ip -6 route show table all",
        sudo=True,
        timeout=30,
    ).stdout


@pytest.fixture(scope="module")
def tproxy(host, settings):
    """The chain with interception: tproxy, a foreign mangle rule and ip rule beside it; all removed afterwards."""
    s = settings.replace(interception="tproxy")
    _foreign(host, "add")
    try:
        egress.up(host, s, guard_seconds=None)
        yield s
    finally:
        egress.down(host, s)
        _foreign(host, "del")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_four_outcomes_through_tproxy(host, tproxy, family):
    df = check.run_cases(host, tproxy, progress=False, family=family)
    assert dict(zip(df["case"], df["outcome"])) == {
        "http allowed": "allowed",
        "http denied": "denied",
        "https allowed": "allowed",
        "https denied": "reset",
    }
    assert all((":" in ip) == (family == "ipv6") for ip in df["remote_ip"])
    # Nothing went through nat: the TPROXY rules moved the packets.
    df_rules = ipt.show(host)
    assert set(df_rules["table"]) == {"mangle"}
    moved = df_rules[(df_rules["family"] == family) & (df_rules["target"] == "TPROXY")]
    assert moved["packets"].sum() > 0


def test_the_sidecar_runs_as_envoy_with_only_net_admin(host, tproxy):
    def status(name):
        pid = envoy_proc.pids(host, tproxy, name)[0]
        text = host.run(["cat", f"/proc/{pid}/status"], sudo=True, timeout=30).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return int(fields["Uid"].split()[1]), int(fields["CapEff"].strip(), 16), int(fields["CapAmb"].strip(), 16)

    uid, eff, amb = status("sidecar")
    assert uid == tproxy.envoy.uid and uid != 0
    assert eff == CAP_NET_ADMIN and amb == CAP_NET_ADMIN
    assert status("igw")[1:] == (0, 0)
    listeners = envoy_proc.admin(host, tproxy, "sidecar", "/config_dump?resource=static_listeners")
    assert listeners.count('"transparent": true') == 2
    assert envoy.render(tproxy, "sidecar").count("transparent: true") == 2


def test_switching_to_redirect_and_back_leaves_no_stale_rule(host, tproxy):
    redirect, plans = egress.switch_interception(host, tproxy, "redirect", guard_seconds=None)
    try:
        assert [p.step for p in plans] == ["iptables ENVOY_EGRESS", "envoy configs"]
        text = _listing(host)
        assert "ENVOY_MARK" not in text and "lookup 400" not in text and "table 400" not in text
        assert set(ipt.show(host)["table"]) == {"nat"}
        df = check.run_cases(host, redirect, progress=False, family="ipv4")
        assert df.set_index("case").loc["https denied", "outcome"] == "reset"
        pid = envoy_proc.pids(host, redirect, "sidecar")[0]
        assert "CapEff:\t0000000000000000" in host.run(["cat", f"/proc/{pid}/status"], sudo=True).stdout
    finally:
        back, _ = egress.switch_interception(host, redirect, "tproxy", guard_seconds=None)
    assert back == tproxy
    assert "ENVOY_EGRESS" not in host.run("iptables-save -t nat; ip6tables-save -t nat", sudo=True).stdout
    assert ipt.plan_apply(host, tproxy).empty


def test_cli_shows_and_plans_the_removal_of_the_mangle_rules_and_the_routing(tproxy):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tproxy_nb.cli", *args], capture_output=True, text=True, timeout=120
        )

    show = cli("iptables", "show")
    assert show.returncode == 0 and "ENVOY_TPROXY" in show.stdout and "mangle" in show.stdout
    assert "priority 1000 fwmark 0x400/0x400 lookup 400" in show.stdout
    plan = cli("iptables", "remove", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert (
        "-X ENVOY_MARK" in plan.stdout and "$ ip -6 route del local default dev lo table 400 proto 201" in plan.stdout
    )


def test_the_data_bundle_holds_both_families_of_the_mangle_rules(host, tproxy, tmp_path):
    df = check.run_cases(host, tproxy, progress=False, family="ipv6")
    data = bundle.record(tmp_path / "data", host, tproxy, results=df, logs={}, stats_before={})
    rules = {p.name: p.read_text() for p in (data / "iptables").iterdir()}
    assert sorted(rules) == ["mangle.rules", "mangle6.rules", "nat.rules", "nat6.rules"]
    assert "--on-ip ::1" in rules["mangle6.rules"] and "--on-ip 127.0.0.1" in rules["mangle.rules"]
    assert "ENVOY_EGRESS" not in rules["nat.rules"] + rules["nat6.rules"]
    assert "tpx-nowhere" not in rules["mangle.rules"]  # only our chains and hooks
    tproxied = [line for line in rules["mangle6.rules"].splitlines() if "-j TPROXY" in line]
    assert any(not line.startswith("[0:0]") for line in tproxied)  # with counters: the requests moved them


def test_down_leaves_no_mangle_rule_ip_rule_or_route_of_ours(host, tproxy):
    # Last in this module: the fixture's own down() afterwards then finds nothing to do.
    egress.down(host, tproxy)
    text = _listing(host)
    assert "tproxy-nb" not in text and "ENVOY_" not in text
    assert "proto 201" not in text and "lookup 400" not in text
    assert text.count("tpx-nowhere") == 2 and text.count("fwmark 0x1 lookup 100") == 2
    assert ipt.show(host).empty and ipt.show_routing(host).empty and ipt.plan_remove(host).empty
