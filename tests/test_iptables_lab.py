"""tproxy_nb.iptables against real iptables on the lab host, over SSH.

Uses the session fixtures ``host`` (a connected tproxy_nb.hosts.Host to the lab's host
namespace, login user with passwordless sudo) and ``settings`` from tests/conftest.py.
Every test puts all tables back as it found them, whatever happened.
"""

from __future__ import annotations

import time

import pytest

from tproxy_nb.errors import StepError
from tproxy_nb.render import firewall as fw
from tproxy_nb.render import iptables_save as ips
from tproxy_nb.steps import firewall as ipt
from tproxy_nb.steps import guard

pytestmark = pytest.mark.lab

DROP_SSH = "*filter\n-A INPUT -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n"
FOREIGN_BEFORE = "-p tcp -m tcp --dport 9999 -j RETURN"
FOREIGN_INSERTED = "-p udp -m udp --dport 5353 -j RETURN"
FOREIGN_APPENDED = "-d 198.18.1.0/24 -p tcp -m tcp --dport 8080 -j RETURN"


def save(host, table: str | None = None, family: str = "ipv4") -> str:
    cmd = [fw.tool(family, "-save")] + (["-t", table] if table else [])
    return host.run(cmd, sudo=True, timeout=60).stdout


def iptables(host, *args: str) -> None:
    host.run(["iptables", *args], sudo=True, timeout=60)


@pytest.fixture
def pristine(host):
    """Every table of both families as it was before the test, restored afterwards; our chains removed first."""
    before = {family: save(host, family=family) for family in fw.FAMILIES}
    ipt.remove(host)
    yield
    # A full restore (no --noflush) of the saved tables, plus empty nat/filter where the save had
    # none (nft creates tables lazily), undoes whatever the test or a failure left behind.
    for family, saved in before.items():
        host.run(
            [fw.tool(family, "-restore")],
            sudo=True,
            stdin=guard.rollback_text(saved, "*nat\nCOMMIT\n*filter\nCOMMIT\n"),
            timeout=60,
        )
        assert ips.ruleset_diff(ips.parse_save(saved), ips.parse_save(save(host, family=family))) == []


def guard_leftovers(host) -> str:
    return host.run(f"ls -A {guard.GUARD_DIR} 2>/dev/null || true", sudo=True, timeout=30).stdout.strip()


def test_backend_is_nft_or_legacy(host):
    kind = ipt.backend(host)
    assert kind in ("nft", "legacy")
    shown = host.run(["iptables", "-V"], sudo=True).stdout
    assert ("(nf_tables)" in shown) == (kind == "nft")


def test_the_lab_host_is_dual_stack(host):
    fam = ipt.host_families(host)
    assert fam.has_ipv6 and fam.has_tools("ipv4") and fam.has_tools("ipv6")
    assert "2001:0db8:0001:0000:0000:0000:0000:0001" in fam.ipv6_addresses


def test_apply_show_and_apply_again_changes_nothing(host, settings, pristine):
    start = {family: ipt.current_state(host, family) for family in fw.FAMILIES}
    first = ipt.apply(host, settings, guard_seconds=None)
    assert [a.family for c in first.changes for a in c.actions] == ["ipv4", "ipv6"]

    # Verify as a user would: the exact lines in iptables -S and ip6tables -S, then the table with counters.
    for family in fw.FAMILIES:
        listed = host.run([fw.tool(family), "-t", "nat", "-S"], sudo=True).stdout.splitlines()
        assert fw.hook_rule(settings).line in listed
        for rule in fw.wanted_rules(settings, family):
            assert rule.line in listed, rule.line
    df = ipt.show(host)
    assert list(df["family"]) == ["ipv4"] * 10 + ["ipv6"] * 10
    for _, rows in df.groupby("family"):
        assert list(rows["chain"]) == ["OUTPUT"] + ["ENVOY_EGRESS"] * 9
        assert list(rows["target"]) == ["ENVOY_EGRESS"] + ["RETURN"] * 7 + ["REDIRECT"] * 2
    assert df["comment"].str.startswith("tproxy-nb: ").all()
    assert str(df["packets"].dtype) == "int64"

    # The pure simulator predicted exactly what the kernel now holds, in each family.
    for change in first.changes:
        action = change.action
        predicted = ips.simulate_restore({"nat": start[action.family]}, action.text)
        assert ips.ruleset_diff(predicted, {"nat": ipt.current_state(host, action.family)}) == []

    once = {family: ips.strip_counters(save(host, "nat", family)) for family in fw.FAMILIES}
    second = ipt.apply(host, settings, guard_seconds=None)
    assert second.empty and second.notes == [
        "ENVOY_EGRESS (IPv4) is in place: 9 rules, one hook in OUTPUT",
        "ENVOY_EGRESS (IPv6) is in place: 9 rules, one hook in OUTPUT",
    ]
    for family in fw.FAMILIES:
        assert ips.strip_counters(save(host, "nat", family)) == once[family]
        assert once[family].count("-j ENVOY_EGRESS") == 1


def test_apply_spares_a_session_open_before_conntrack(host, settings, pristine):
    # A fresh nft host has no nat chain, so conntrack tracks nothing; our restore turns it on and the
    # next packet of the open SSH session looks new to nat OUTPUT. Without the SYN rule it would be
    # REDIRECTed to the sidecar port and the session cut (seen on the lab's first apply).
    if ipt.backend(host) != "nft" or not host.run("command -v nft", sudo=True, check=False).ok:
        pytest.skip("needs the nft backend and the nft tool (Debian package nftables)")
    host.run("nft list table ip nat >/dev/null 2>&1 && nft delete table ip nat || true", sudo=True, timeout=30)
    with guard.reconnect(host) as fresh:
        ipt.apply(fresh, settings, guard_seconds=None)
        assert fresh.run(["true"], timeout=20).ok
    df = ipt.show(host)
    spared = df[(df["comment"] == "tproxy-nb: only new connections (SYN) are redirected") & (df["family"] == "ipv4")]
    assert int(spared["packets"].iloc[0]) >= 1


def test_counters_count_redirected_connections(host, settings, pristine):
    ipt.apply(host, settings, guard_seconds=None)
    # A plain-HTTP connection from the login user is redirected (nothing listens on the sidecar
    # port yet, so curl fails; the redirect rule still counts the connection's first packet).
    host.run("curl -s -o /dev/null -m 3 http://198.18.1.10/", check=False, timeout=30)
    host.run("curl -s -o /dev/null -m 3 'http://[2001:db8:1::10]/'", check=False, timeout=30)
    df = ipt.show(host)
    for family in fw.FAMILIES:
        rows = df[df["family"] == family]
        http = rows[rows["target_options"] == f"--to-ports {settings.ports.http_redirect}"]
        assert len(http) == 1 and int(http["packets"].iloc[0]) >= 1, family
        assert int(rows[rows["chain"] == "OUTPUT"]["packets"].iloc[0]) >= 1, family


def test_guarded_apply_confirms_and_leaves_nothing_behind(host, settings, pristine):
    plan = ipt.apply(host, settings, guard_seconds=5)
    assert not plan.empty
    time.sleep(6)  # past the guard: had the confirmation failed, the timer would have removed the rules now
    assert ipt.plan_apply(host, settings).empty
    assert guard_leftovers(host) == ""


def test_guard_backup_is_root_only_while_pending(host, settings, pristine):
    seen = {}

    def confirm(h):
        # Runs between apply and confirmation: look at the pending guard, then open the new connection.
        seen["modes"] = h.run(f"stat -c '%a %U' {guard.GUARD_DIR} {guard.GUARD_DIR}/*.rules", sudo=True).stdout.split()
        seen["pid"] = h.run(f"cat {guard.GUARD_DIR}/*.pid", sudo=True).stdout.strip()
        return guard.reconnect(h)

    outcome = guard.apply_guarded(host, fw.render_rules(settings), guard_seconds=15, confirm=confirm)
    assert outcome.confirmed
    assert seen["modes"] == ["700", "root", "600", "root"]
    assert int(seen["pid"]) == outcome.pid
    gone = f"test ! -e /proc/{outcome.pid} || grep -q '^State:.*Z' /proc/{outcome.pid}/status"
    assert host.run(gone, sudo=True, check=False).ok, "the cancelled timer is still running"
    assert guard_leftovers(host) == ""


def test_remove_deletes_only_ours(host, settings, pristine):
    iptables(host, "-t", "nat", "-A", "OUTPUT", *FOREIGN_BEFORE.split())
    before = ips.strip_counters(save(host, "nat"))
    ipt.apply(host, settings, guard_seconds=None)
    # Another program adds rules after ours: one inserted before our hook, one appended after it.
    iptables(host, "-t", "nat", "-I", "OUTPUT", "1", *FOREIGN_INSERTED.split())
    iptables(host, "-t", "nat", "-A", "OUTPUT", *FOREIGN_APPENDED.split())

    plan = ipt.remove(host)
    assert not plan.empty
    after = ips.strip_counters(save(host, "nat"))
    output = [line for line in after.splitlines() if line.startswith("-A OUTPUT")]
    had = [line for line in before.splitlines() if line.startswith("-A OUTPUT")]
    assert had[-1] == f"-A OUTPUT {FOREIGN_BEFORE}"
    assert output == [f"-A OUTPUT {FOREIGN_INSERTED}", *had, f"-A OUTPUT {FOREIGN_APPENDED}"]
    others = (
        "\n".join(
            line
            for line in after.splitlines()
            if line not in (f"-A OUTPUT {FOREIGN_INSERTED}", f"-A OUTPUT {FOREIGN_APPENDED}")
        )
        + "\n"
    )
    assert others == before
    assert "tproxy-nb" not in after and "ENVOY_EGRESS" not in after

    six = save(host, "nat", "ipv6")
    assert "tproxy-nb" not in six and "ENVOY_EGRESS" not in six

    again = ipt.remove(host)
    assert again.empty and again.notes == [
        "ENVOY_EGRESS (IPv4) is not present; nothing to remove",
        "ENVOY_EGRESS (IPv6) is not present; nothing to remove",
    ]


def test_refused_restore_changes_nothing(host, settings, pristine):
    ipt.apply(host, settings, guard_seconds=None)
    before = ips.strip_counters(save(host))
    bad = "*nat\n-A OUTPUT -p tcp --dport 7 -j RETURN\n-A OUTPUT -j NO_SUCH_CHAIN_TPX\nCOMMIT\n"
    with pytest.raises(StepError, match="iptables-restore refused the rules") as e:
        guard.restore(host, bad)
    assert "Nothing was changed" in str(e.value)
    assert ips.strip_counters(save(host)) == before
    # Under the guard the same refusal cancels the timer at once and leaves no file behind.
    with pytest.raises(StepError, match="refused"):
        guard.apply_guarded(host, bad, guard_seconds=30)
    assert guard_leftovers(host) == ""
    assert ips.strip_counters(save(host)) == before


def test_guard_rolls_back_rules_that_cut_ssh(host, pristine):
    before = ips.parse_save(save(host))
    started = time.monotonic()
    with pytest.raises(StepError, match="rolled back by the host itself") as e:
        guard.apply_guarded(host, DROP_SSH, guard_seconds=4)
    took = time.monotonic() - started
    assert 4 <= took < 60, took
    assert "matches the rules saved before the change" in str(e.value)
    # The test's own session works again and the rules are exactly those from before.
    assert host.run(["true"], timeout=30).ok
    assert ips.ruleset_diff(before, ips.parse_save(save(host))) == []
    assert guard_leftovers(host) == ""
