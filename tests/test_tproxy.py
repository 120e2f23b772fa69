"""interception: tproxy — the mangle rules, the ip rule and route, their planner (on the fake host) and the sidecar.

Golden files as for the NAT chain (tests/golden/iptables); the planner runs pyinfra style: plan -> apply onto
the fake -> plan again must be empty, and removal leaves the foreign mangle rule and ip rule where they were.
"""

from __future__ import annotations

import shlex

import pandas as pd
import pytest
import yaml
from fakes import FakeHost
from test_iptables import GOLDEN, golden, hook_and_chain
from test_plans import small_envoy  # noqa: F401  (a fixture)

from tproxy_nb.errors import SettingsError, StepError
from tproxy_nb.render import envoy
from tproxy_nb.render import firewall as fw
from tproxy_nb.render import iptables_save as ips
from tproxy_nb.settings import Settings, load_settings
from tproxy_nb.steps import chain, envoy_proc, facts
from tproxy_nb.steps import firewall as ipt
from tproxy_nb.steps.plan import Restore, Run

TPROXY = Settings().replace(interception="tproxy")
#: A rule of someone else's in mangle PREROUTING and an ip rule of theirs: both must outlive us.
FOREIGN_MANGLE = "-A PREROUTING -i eth0 -p udp -j MARK --set-xmark 0x1/0xffffffff"
FOREIGN_RULE = {"priority": 500, "src": "all", "fwmark": "0x1", "fwmask": "0xffffffff", "table": "100"}


def host_with_foreigners() -> FakeHost:
    host = FakeHost()
    for attr in ("nat", "nat6"):
        setattr(host, attr, ips.simulate_restore(getattr(host, attr), f"*mangle\n{FOREIGN_MANGLE}\nCOMMIT\n"))
    for family in fw.FAMILIES:
        host.ip_rules[family].insert(1, dict(FOREIGN_RULE, protocol="boot"))
    host.ip_routes["ipv4"]["100"] = [{"type": "unicast", "dst": "default", "dev": "eth0", "protocol": "boot"}]
    return host


def ours_in_mangle(host: FakeHost) -> list[str]:
    return [
        r.line
        for tables in (host.nat, host.nat6)
        for r in (tables.get("mangle") or ips.empty_table("mangle")).rules
        if r.ours or r.chain in fw.OUR_CHAINS["mangle"] or r.target in fw.OUR_CHAINS["mangle"]
    ]


def ours_in_routing(host: FakeHost) -> list[dict]:
    entries = [e for f in fw.FAMILIES for e in host.ip_rules[f]]
    entries += [e for f in fw.FAMILIES for routes in host.ip_routes[f].values() for e in routes]
    return [e for e in entries if e.get("protocol") == "201"]


# --------------------------------------------------------------------------- settings and render


def test_interception_defaults_to_redirect_and_names_the_modes(tmp_path):
    assert Settings().interception == "redirect"
    f = tmp_path / "s.yaml"
    f.write_text("interception: tproxy\n")
    assert load_settings(f).interception == "tproxy"
    f.write_text("interception: tprox\n")
    with pytest.raises(SettingsError, match=r"interception = 'tprox'.*redirect, tproxy"):
        load_settings(f)


@pytest.mark.parametrize("family", fw.FAMILIES)
def test_render_tproxy_matches_golden(family):
    suffix = "" if family == "ipv4" else "-ipv6"
    golden(f"render-tproxy{suffix}.rules", fw.render_rules(TPROXY, family) + fw.render_routing(family))


@pytest.mark.parametrize(
    "family, name", [("ipv4", "save-nft-tproxy-applied.txt"), ("ipv6", "save6-nft-tproxy-applied.txt")]
)
def test_render_tproxy_is_what_iptables_lists(family, name):
    # The samples were loaded from render_rules(TPROXY, family) next to a foreign rule: iptables printed it back.
    saved = (GOLDEN / name).read_text()
    lines = hook_and_chain(fw.render_rules(TPROXY, family))
    assert len(lines) == 15
    for line in lines:
        assert line in saved, line
        assert '--comment "tproxy-nb: ' in line


def test_tproxy_rules_mirror_the_nat_exclusions_and_target_the_listeners():
    for family in fw.FAMILIES:
        nat = [r.spec for r in fw.wanted_rules(Settings(), family) if r.spec.endswith("-j RETURN")][1:]
        mark = [r.spec for r in fw.wanted_mark_rules(TPROXY, family) if r.spec.endswith("-j RETURN")][1:]
        assert mark == nat  # envoy uid/gid, root, lo, loopback, link-local: the same rules, the same order
    text = fw.render_rules(TPROXY, "ipv6")
    assert "*nat" not in text and "REDIRECT" not in text
    assert "-j TPROXY --on-port 12003 --on-ip ::1 --tproxy-mark 0x400/0x400" in text
    assert "--dport 80" in text and "-j TPROXY --on-port 12000 --on-ip ::1" in text
    off = fw.render_rules(load_settings(None, interception="tproxy", bypass={"root": False}))
    assert "--uid-owner 0 " not in off and "169.254.0.0/16" in off
    assert fw.render_routing() == (
        "ip rule add priority 1000 fwmark 0x400/0x400 lookup 400 proto 201\n"
        "ip route add local default dev lo table 400 proto 201\n"
    )


def test_explain_tproxy_ends_with_the_ip_rule_and_route():
    df = pd.DataFrame(fw.explain_rules(TPROXY, "ipv6"))
    assert list(df["chain"][:2]) == ["OUTPUT", "ENVOY_MARK"] and list(df["chain"][-2:]) == ["ip rule", "ip route"]
    assert df.iloc[-1]["rule"] == "ip -6 route add local default dev lo table 400 proto 201"
    assert df["why"].str.len().min() > 40


def test_sidecar_listeners_are_transparent_only_under_tproxy():
    def transparent(settings):
        listeners = yaml.safe_load(envoy.render(settings, "sidecar"))["static_resources"]["listeners"]
        return {x["name"]: x.get("transparent") for x in listeners}

    assert transparent(TPROXY) == {"sidecar_http": True, "sidecar_tls": True, "sidecar_explicit": None}
    assert transparent(Settings()) == {"sidecar_http": False, "sidecar_tls": False, "sidecar_explicit": None}
    assert envoy.render(TPROXY, "igw") == envoy.render(Settings(), "igw")


# --------------------------------------------------------------------------- facts


ROUTING_OUT = """rules 4 [{"priority":0,"src":"all","table":"local"},{"priority":1000,"src":"all","fwmark":"0x400",\
"fwmask":"0x400","table":"400","protocol":"201"},{"priority":32766,"src":"all","table":"main"}]
routes 4 [{"type":"local","dst":"default","dev":"lo","protocol":"201","scope":"host","flags":[]}]
rules 6 not json
routes 6 []
"""


def test_parse_routing_reads_ip_json():
    r = facts.parse_routing(ROUTING_OUT, 400)
    assert r.ip and len(r.of("ipv4", "rule")) == 3 and r.of("ipv6", "rule") == []
    rule, route = r.of("ipv4", "rule")[1], r.of("ipv4", "route")[0]
    assert (rule.fields, rule.proto) == (fw.ip_entries()[0].fields, "201")
    assert (route.fields, route.proto) == (fw.ip_entries()[1].fields, "201")
    assert not facts.parse_routing("no-ip\n", 400).ip


# --------------------------------------------------------------------------- the planner on the fake host


def test_tproxy_plan_apply_plan_again_and_remove_keep_foreign_rules():
    host = host_with_foreigners()
    before = (
        ips.strip_counters(ipt.run_iptables(host, ["iptables-save"]).stdout),
        [dict(e) for e in ours_in_routing(host)],
    )
    plan = ipt.plan_apply(host, TPROXY, guard_seconds=None)
    kinds = [type(a).__name__ for c in plan.changes for a in c.actions]
    # Per family: the ip rule and route first (harmless until packets are marked), then one atomic restore.
    assert kinds == ["Run", "Run", "Restore"] * 2
    assert plan.step == "iptables ENVOY_MARK, ENVOY_TPROXY"
    assert [a.argv[:4] for c in plan.changes for a in c.actions if isinstance(a, Run)][:2] == [
        ("ip", "rule", "add", "priority"),
        ("ip", "route", "add", "local"),
    ]
    plan.apply(host)
    again = ipt.plan_apply(host, TPROXY)
    assert again.empty, str(again)
    assert "ENVOY_MARK (IPv6) is in place: 10 rules, one hook in OUTPUT" in again.notes
    assert "ip rule and route of table 400 (IPv6) are in place" in again.notes
    assert len(ours_in_routing(host)) == 4
    df = ipt.show(host)
    assert set(df["table"]) == {"mangle"} and df.groupby("family").size().to_dict() == {"ipv4": 15, "ipv6": 15}
    assert (
        list(ipt.show_routing(host)["entry"])
        == [
            "priority 1000 fwmark 0x400/0x400 lookup 400",
            "local default dev lo table 400",
        ]
        * 2
    )

    removal = ipt.remove(host)
    kinds = [type(a).__name__ for c in removal.changes for a in c.actions]
    assert kinds == ["Restore", "Run", "Run"] * 2  # stop marking first, then the rule and route
    assert "Delete 2 IPv4 mangle rule(s) of ours and chains ENVOY_MARK, ENVOY_TPROXY" in str(removal)
    assert ours_in_mangle(host) == [] and ours_in_routing(host) == []
    after = ips.strip_counters(ipt.run_iptables(host, ["iptables-save"]).stdout)
    assert FOREIGN_MANGLE in after and after == before[0]
    assert all(dict(FOREIGN_RULE, protocol="boot") in host.ip_rules[f] for f in fw.FAMILIES)
    assert host.ip_routes["ipv4"]["100"][0]["dev"] == "eth0"
    assert ipt.plan_remove(host).empty and ipt.show(host).empty and ipt.show_routing(host).empty


def test_switching_interception_leaves_nothing_of_the_other_mode():
    host = host_with_foreigners()
    ipt.apply(host, Settings(), guard_seconds=None)
    assert set(ipt.show(host)["table"]) == {"nat"}
    switch = ipt.apply(host, TPROXY, guard_seconds=None)
    restore = next(a for c in switch.changes for a in c.actions if isinstance(a, Restore))
    assert (
        restore.text.startswith("*nat\n-D OUTPUT") and "-X ENVOY_EGRESS" in restore.text and "*mangle" in restore.text
    )
    assert "(interception is tproxy)" in switch.changes[1].description
    assert set(ipt.show(host)["table"]) == {"mangle"} and len(ours_in_routing(host)) == 4
    back = ipt.apply(host, Settings(), guard_seconds=None)
    assert [type(a).__name__ for a in back.changes[-1].actions] == ["Run", "Run"]  # rule and route go last
    assert set(ipt.show(host)["table"]) == {"nat"} and ours_in_mangle(host) == [] and ours_in_routing(host) == []
    assert ipt.plan_apply(host, Settings()).empty
    assert FOREIGN_MANGLE in ipt.run_iptables(host, ["iptables-save"]).stdout


def test_a_stale_mangle_rule_and_ip_rule_of_ours_are_replaced():
    host = FakeHost()
    ipt.apply(host, TPROXY, guard_seconds=None)
    host.ip_rules["ipv4"].insert(
        1, {"priority": 900, "src": "all", "fwmark": "0x400", "fwmask": "0x400", "table": "400", "protocol": "201"}
    )
    host.nat = ips.simulate_restore(host.nat, "*mangle\n-D ENVOY_TPROXY 1\nCOMMIT\n")
    plan = ipt.plan_apply(host, TPROXY, guard_seconds=None)
    assert "Rewrite ENVOY_TPROXY (IPv4) (its 2 rule(s) are not the 3 wanted)" in str(plan)
    assert ("ip", "rule", "del", "priority", "900") == plan.changes[-1].actions[0].argv[:5]
    plan.apply(host)
    assert ipt.plan_apply(host, TPROXY).empty and len(ours_in_routing(host)) == 4


def test_a_foreign_route_in_our_table_or_no_ip_command_is_refused_before_any_change():
    host = FakeHost()
    host.ip_routes["ipv6"]["400"] = [{"type": "unicast", "dst": "default", "dev": "eth0", "protocol": "boot"}]
    with pytest.raises(StepError, match=r"table 400 \(IPv6\) already holds routes that are not ours.*Nothing was"):
        ipt.apply(host, TPROXY, guard_seconds=None)
    host = FakeHost()
    host.has_ip = False
    with pytest.raises(StepError, match="needs the ip command"):
        ipt.apply(host, TPROXY, guard_seconds=None)
    assert not any(c.startswith(("iptables-restore", "ip6tables-restore", "ip ")) for c in host.commands())
    assert ipt.plan_apply(host, Settings()).changes  # redirect needs no ip command


def test_the_sidecar_starts_as_the_envoy_user_with_net_admin_only_under_tproxy(tmp_path, monkeypatch):
    host = FakeHost()
    s = TPROXY
    argv = envoy_proc.with_net_admin(s, "true")
    assert argv[:5] == ["setpriv", "--reuid", "tpx-envoy", "--regid", "tpx-envoy"]
    assert shlex.join(argv).endswith("--ambient-caps +net_admin -- sh -c true")
    assert envoy_proc.needs_net_admin(s, "sidecar") and not envoy_proc.needs_net_admin(s, "igw")
    assert not envoy_proc.needs_net_admin(Settings(), "sidecar")
    monkeypatch.setattr(envoy_proc, "validate", lambda *a, **k: None)
    for name in envoy.NAMES:
        host.files[envoy.config_path(s, name)] = host.files["/"]
    envoy_proc.start(host, s)
    procs = {p.argv[2]: p for p in host.procs.values()}
    side = procs[envoy.config_path(s, "sidecar")]
    assert (side.user, side.caps) == ("tpx-envoy", ("net_admin",))
    assert procs[envoy.config_path(s, "igw")].caps == ()


@pytest.mark.usefixtures("small_envoy")
def test_switch_interception_on_the_fake_restarts_only_the_sidecar(tmp_path):
    host = FakeHost()
    chain.up(host, Settings(), certs_dir=tmp_path / "certs", guard_seconds=None)
    igw = envoy_proc.pids(host, Settings(), "igw")
    s, plans = chain.switch_interception(host, Settings(), "tproxy", guard_seconds=None)
    assert [p.step for p in plans] == ["envoy configs", "iptables ENVOY_MARK, ENVOY_TPROXY"]
    side = host.procs[envoy_proc.pids(host, s, "sidecar")[0]]
    assert side.caps == ("net_admin",) and envoy_proc.pids(host, s, "igw") == igw
    assert set(ipt.show(host)["table"]) == {"mangle"} and len(ours_in_routing(host)) == 4
    back, plans = chain.switch_interception(host, s, "redirect", guard_seconds=None)
    assert [p.step for p in plans] == ["iptables ENVOY_EGRESS", "envoy configs"]
    assert host.procs[envoy_proc.pids(host, back, "sidecar")[0]].caps == ()
    assert set(ipt.show(host)["table"]) == {"nat"} and ours_in_routing(host) == [] and ours_in_mangle(host) == []
    assert all(p.empty for p in chain.up(host, back, certs_dir=tmp_path / "certs", guard_seconds=None))
