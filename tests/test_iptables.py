"""Pure tests of tproxy_nb.iptables: render, parse, plan, simulate; no host, no root.

Golden files live in tests/golden/iptables/: ``save-*.txt`` are real ``iptables-save -c -t nat``
outputs captured in a scratch network namespace (nft and legacy backends); ``render-*``,
``plan-*``, ``remove-*`` and ``parse-*`` are expected outputs. Regenerate the expected ones after
a deliberate change with ``TPROXY_NB_UPDATE_GOLDEN=1 pytest tests/test_iptables.py`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from fakes import FakeHost

from tproxy_nb.errors import StepError
from tproxy_nb.render import firewall as fw
from tproxy_nb.render import iptables_save as ips
from tproxy_nb.settings import Settings, load_settings
from tproxy_nb.steps import firewall as ipt
from tproxy_nb.steps import guard

GOLDEN = Path(__file__).parent / "golden" / "iptables"
UPDATE = os.environ.get("TPROXY_NB_UPDATE_GOLDEN") == "1"


def golden(name: str, actual: str) -> None:
    """Compare with (or, when updating, write) a golden file."""
    path = GOLDEN / name
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"missing golden file {path}; run with TPROXY_NB_UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), f"{name} differs from the golden file"


def sample(name: str) -> dict[str, ips.Table]:
    return ips.parse_save((GOLDEN / name).read_text())


def custom_settings() -> Settings:
    return load_settings(None, envoy={"uid": 3001, "gid": 3002}, ports={"http_redirect": 15080, "tls_redirect": 15443})


def no_bypass() -> Settings:
    """Only the envoy user and loopback bypass: the chain as releases before the bypass settings had it."""
    return load_settings(None, bypass={"root": False, "link_local": False})


def restore_text(plan) -> str:
    """The restore input of a plan ('' for an empty plan)."""
    assert len(plan.changes) <= 1
    return plan.changes[0].action.text if plan.changes else ""


def hook_and_chain(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A ")]


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize(
    "name, make, family",
    [
        ("default", Settings, "ipv4"),
        ("default-ipv6", Settings, "ipv6"),
        ("no-bypass", no_bypass, "ipv4"),
        ("no-bypass-ipv6", no_bypass, "ipv6"),
        ("custom", custom_settings, "ipv4"),
    ],
)
def test_render_matches_golden(name, make, family):
    golden(f"render-{name}.rules", fw.render_rules(make(), family))


@pytest.mark.parametrize("family", fw.FAMILIES)
def test_every_rule_carries_our_comment(family):
    for line in hook_and_chain(fw.render_rules(Settings(), family)):
        assert ' -m comment --comment "tproxy-nb: ' in line, line
        assert len(ips.split_spec(line)[3] or "") < 256  # the kernel's limit for a comment


def test_bypass_rules_say_why_and_follow_the_settings():
    v4, v6 = fw.render_rules(Settings(), "ipv4"), fw.render_rules(Settings(), "ipv6")
    root = '-m owner --uid-owner 0 -m comment --comment "tproxy-nb: root (uid 0) bypasses the proxy: apt, '
    assert root in v4 and root in v6
    assert '-d 169.254.0.0/16 -m comment --comment "tproxy-nb: link-local 169.254.0.0/16 bypasses' in v4
    assert "instance metadata, VPC resolver, time sync" in v4
    assert '-d fe80::/10 -m comment --comment "tproxy-nb: link-local fe80::/10 bypasses' in v6
    assert "-d ::1/128 " in v6 and "127.0.0.0/8" not in v6 and "169.254" not in v6 and "fe80" not in v4
    # Each bypass RETURNs before the REDIRECTs (iptables takes the first matching rule).
    lines = hook_and_chain(v4)
    first_redirect = next(i for i, line in enumerate(lines) if "REDIRECT" in line)
    assert max(i for i, line in enumerate(lines) if "bypasses" in line) < first_redirect
    off = fw.render_rules(no_bypass(), "ipv4")
    assert "--uid-owner 0 " not in off and "169.254" not in off
    only_root = fw.render_rules(load_settings(None, bypass={"link_local": False}), "ipv6")
    assert "--uid-owner 0 " in only_root and "fe80::/10" not in only_root
    # Only the loopback and link-local ranges differ between the families.
    assert len(hook_and_chain(v4)) == len(hook_and_chain(v6)) == 10
    with pytest.raises(ValueError, match="unknown address family"):
        fw.render_rules(Settings(), "ipx")


def test_render_follows_settings():
    text = fw.render_rules(custom_settings())
    assert "--uid-owner 3001 " in text and "--gid-owner 3002 " in text
    assert "--to-ports 15080" in text and "--to-ports 15443" in text
    assert "2101" not in text and "12003" not in text and "12000" not in text


@pytest.mark.parametrize("family, name", [("ipv4", "save-nft-applied.txt"), ("ipv6", "save6-nft-applied.txt")])
def test_render_is_what_iptables_lists(family, name):
    # The captured samples were loaded from render_rules(Settings(), family): (ip6)iptables printed every line back.
    saved = (GOLDEN / name).read_text()
    for line in hook_and_chain(fw.render_rules(Settings(), family)):
        assert line in saved, line


def test_explain_rules_one_row_per_rule():
    df = pd.DataFrame(fw.explain_rules(Settings()))
    assert list(df.columns) == ["chain", "rule", "why"]
    rendered = [line for line in fw.render_rules(Settings()).splitlines() if line.startswith("-A ")]
    assert list(df["rule"]) == rendered
    assert df.loc[0, "chain"] == "OUTPUT" and "PREROUTING" in df.loc[0, "why"]
    assert "SYN" in df.loc[1, "rule"] and "cut that session" in df.loc[1, "why"]
    assert "loop" in df.loc[2, "why"]
    assert df["why"].str.len().min() > 40


def test_comment_refuses_quotes():
    with pytest.raises(ValueError):
        fw._spec("-p tcp", 'say "hi"', "RETURN")


# --------------------------------------------------------------------------- parse


def test_parse_nft_sample():
    nat = sample("save-nft-applied.txt")["nat"]
    assert list(nat.chains) == ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "DOCKER", "ENVOY_EGRESS"]
    assert nat.chains["OUTPUT"] == ips.Chain("OUTPUT", "ACCEPT", 2, 120)
    assert nat.chains["ENVOY_EGRESS"].policy is None
    hook = nat.chain_rules("OUTPUT")[1]
    assert (hook.packets, hook.bytes, hook.target, hook.match) == (6, 360, "ENVOY_EGRESS", "-p tcp")
    assert hook.ours and hook.comment == "tproxy-nb: outbound TCP from this host goes through ENVOY_EGRESS"
    docker = nat.chain_rules("OUTPUT")[0]
    assert not docker.ours and docker.match == "'!' -d 127.0.0.0/8 -m addrtype --dst-type LOCAL"
    http = nat.chain_rules("ENVOY_EGRESS")[7]
    assert (http.target, http.target_options, http.packets) == ("REDIRECT", "--to-ports 12003", 2)
    assert all(isinstance(r.packets, int) and isinstance(r.bytes, int) for r in nat.rules)


def test_parse_golden_json():
    tables = sample("save-nft-duplicate-hook.txt")
    as_data = {name: dataclasses.asdict(t) for name, t in tables.items()}
    golden("parse-nft-duplicate-hook.json", json.dumps(as_data, indent=1) + "\n")


def test_parse_legacy_and_empty_samples():
    legacy = sample("save-legacy-stale.txt")["nat"]
    assert [r.target_options for r in legacy.chain_rules("ENVOY_EGRESS")][-1] == "--to-ports 15002"
    empty = sample("save-nft-empty.txt")["nat"]
    assert empty.rules == [] and set(empty.chains) == {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}


def test_parse_without_counters_and_warnings():
    text = (
        "*nat\n:OUTPUT ACCEPT\n-A OUTPUT -j RETURN\n"
        "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\nCOMMIT\n"
    )
    nat = ips.parse_save(text)["nat"]
    assert nat.rules == [ips.Rule("OUTPUT", "-j RETURN")]
    assert nat.warnings == ["Warning: iptables-legacy tables present, use iptables-legacy-save to see them"]
    assert ips.save_warnings(text) == nat.warnings


@pytest.mark.parametrize(
    "text, words",
    [
        ("-A OUTPUT -j RETURN\n", r"before any \*table"),
        ("*nat\nnonsense\nCOMMIT\n", "line 2"),
        ("*nat\n:OUTPUT ACCEPT [0:0]\n", "cut off"),
    ],
)
def test_parse_errors_name_the_line(text, words):
    with pytest.raises(StepError, match=words):
        ips.parse_save(text)


def test_split_and_normalize_spec():
    assert ips.split_spec('-p tcp -m tcp --dport 80 -m comment --comment "tproxy-nb: x" -j REDIRECT --to-ports 1') == (
        "-p tcp -m tcp --dport 80",
        "REDIRECT",
        "--to-ports 1",
        "tproxy-nb: x",
    )
    assert ips.split_spec("-o lo") == ("-o lo", "", "", None)
    assert ips.normalize_spec("-p tcp --dport 80 -j ACCEPT") == ips.normalize_spec("-p tcp -m tcp --dport 80 -j ACCEPT")
    assert ips.normalize_spec('-m comment --comment "a b"') == ips.normalize_spec("-m comment --comment 'a b'")
    assert ips.normalize_spec("-p tcp -m multiport --dports 1,2") != ips.normalize_spec("-p tcp --dports 1,2")


@pytest.mark.parametrize(
    "text, kind",
    [
        ("iptables v1.8.9 (nf_tables)\n", "nft"),
        ("iptables v1.8.7 (legacy)\n", "legacy"),
        ("iptables v1.6.1\n", "legacy"),
    ],
)
def test_parse_backend(text, kind):
    assert ips.parse_backend(text) == kind


def test_parse_backend_rejects_garbage():
    with pytest.raises(StepError, match="Cannot tell the iptables backend"):
        ips.parse_backend("sh: iptables: not found")


# --------------------------------------------------------------------------- plan (pyinfra style: golden, run twice)

APPLY_CASES = {
    # case: (sample, settings factory, family)
    "empty": ("save-nft-empty.txt", Settings, "ipv4"),
    "applied": ("save-nft-applied.txt", Settings, "ipv4"),
    "previous-version": ("save-nft-previous-version.txt", Settings, "ipv4"),
    "duplicate-hook": ("save-nft-duplicate-hook.txt", Settings, "ipv4"),
    "legacy-stale": ("save-legacy-stale.txt", Settings, "ipv4"),
    "custom-over-applied": ("save-nft-applied.txt", custom_settings, "ipv4"),
    "bypass-over-no-bypass": ("save-nft-no-bypass.txt", Settings, "ipv4"),
    "no-bypass": ("save-nft-no-bypass.txt", no_bypass, "ipv4"),
    "no-bypass-over-applied": ("save-nft-applied.txt", no_bypass, "ipv4"),
    "ipv6-empty": ("save6-nft-empty.txt", Settings, "ipv6"),
    "ipv6-applied": ("save6-nft-applied.txt", Settings, "ipv6"),
    "ipv6-no-bypass-over-applied": ("save6-nft-applied.txt", no_bypass, "ipv6"),
}


def foreign(tables: dict[str, ips.Table]) -> dict[str, list[str]]:
    """Every rule that is not ours, per chain, in order (with counters: untouched means untouched)."""
    nat = tables.get("nat") or ips.empty_table("nat")
    out: dict[str, list[str]] = {}
    for r in nat.rules:
        if not (r.ours or r.target == fw.CHAIN or r.chain == fw.CHAIN):
            out.setdefault(r.chain, []).append(f"[{r.packets}:{r.bytes}] {r.spec}")
    return out


@pytest.mark.parametrize("case", sorted(APPLY_CASES))
def test_plan_apply_golden_and_idempotent(case):
    name, make, family = APPLY_CASES[case]
    settings, state = make(), sample(name)
    plan = ipt.plan_from_state(state, settings, family=family)
    text = restore_text(plan)
    golden(f"plan-{case}.restore", text)
    if text:
        assert plan.changes[0].action.family == family
    after = ips.simulate_restore(state, text) if text else state
    again = ipt.plan_from_state(after, settings, family=family)
    assert again.empty, f"not idempotent:\n{again}"
    assert again.notes[-1].startswith(f"ENVOY_EGRESS ({fw.LABELS[family]}) is in place")
    assert [r.spec for r in after["nat"].chain_rules(fw.CHAIN)] == [w.spec for w in fw.wanted_rules(settings, family)]
    assert foreign(after) == foreign(state)
    hooks = [r for r in after["nat"].chain_rules("OUTPUT") if r.target == fw.CHAIN]
    assert len(hooks) == 1


def test_plan_on_applied_says_in_place():
    plan = ipt.plan_from_state(sample("save-nft-applied.txt"), Settings())
    assert plan.empty and plan.notes == ["ENVOY_EGRESS (IPv4) is in place: 9 rules, one hook in OUTPUT"]
    assert ipt.plan_from_state(sample("save-nft-no-bypass.txt"), no_bypass()).notes == [
        "ENVOY_EGRESS (IPv4) is in place: 7 rules, one hook in OUTPUT"
    ]
    assert "nothing to change" in str(plan)


def test_plan_keeps_a_right_hook_and_its_counters():
    state = sample("save-nft-applied.txt")
    after = ips.simulate_restore(state, restore_text(ipt.plan_from_state(state, custom_settings())))
    hook = next(r for r in after["nat"].chain_rules("OUTPUT") if r.target == fw.CHAIN)
    assert (hook.packets, hook.bytes) == (6, 360)


def test_plan_upgrades_a_previous_version_in_place():
    # The sample is a real chain of an earlier release (no SYN rule): the chain is rewritten, the hook kept.
    plan = ipt.plan_from_state(sample("save-nft-previous-version.txt"), Settings())
    text = restore_text(plan)
    assert plan.changes[0].description.startswith("Rewrite ENVOY_EGRESS (IPv4)")
    assert "! --tcp-flags FIN,SYN,RST,ACK SYN" in text and "-A OUTPUT" not in text and "-D " not in text


def test_plan_duplicate_hook_only_deletes():
    # The sample's chain is the one without bypass rules: with those settings only the extra hook goes.
    plan = ipt.plan_from_state(sample("save-nft-duplicate-hook.txt"), no_bypass())
    text = restore_text(plan)
    assert text.count("-D OUTPUT") == 1 and ":ENVOY_EGRESS" not in text and "-A " not in text
    assert "kept with their counters" in " ".join(plan.notes)


def test_plan_shows_restore_text_for_dry_run():
    plan = ipt.plan_from_state({}, Settings(), guard_seconds=20)
    shown = str(plan)
    assert "iptables-restore --noflush" in shown and "20 s" in shown
    assert "| -A OUTPUT -p tcp" in shown
    assert plan.changes[0].commands == [] and plan.changes[0].action.guard_seconds == 20
    assert plan.to_dict()["changes"][0]["description"].startswith("Create ENVOY_EGRESS")
    six = ipt.plan_from_state({}, Settings(), guard_seconds=20, family="ipv6")
    assert "$ ip6tables-restore --noflush <<EOF" in str(six) and "| -A ENVOY_EGRESS -d fe80::/10" in str(six)
    assert six.step == "ip6tables ENVOY_EGRESS" and six.to_dict()["changes"][0]["actions"][0]["family"] == "ipv6"


def test_plan_deletes_our_comment_outside_the_chain():
    state = ips.simulate_restore(
        sample("save-nft-applied.txt"),
        '*nat\n-A POSTROUTING -m comment --comment "tproxy-nb: left over" -j RETURN\nCOMMIT\n',
    )
    text = restore_text(ipt.plan_from_state(state, Settings()))
    assert text == '*nat\n-D POSTROUTING -m comment --comment "tproxy-nb: left over" -j RETURN\nCOMMIT\n'


def test_plan_passes_warnings_on():
    nat = sample("save-nft-applied.txt")["nat"]
    nat.warnings.append("Warning: iptables-legacy tables present, use iptables-legacy-save to see them")
    assert "legacy tables present" in ipt.plan_from_state(nat, Settings()).notes[0]


REMOVE_CASES = [
    "save-nft-empty.txt",
    "save-nft-applied.txt",
    "save-nft-no-bypass.txt",
    "save-nft-previous-version.txt",
    "save-nft-duplicate-hook.txt",
    "save-legacy-stale.txt",
    "save6-nft-empty.txt",
    "save6-nft-applied.txt",
]


@pytest.mark.parametrize("name", REMOVE_CASES)
def test_plan_remove_golden_and_idempotent(name):
    state = sample(name)
    family = "ipv6" if name.startswith("save6") else "ipv4"
    plan = ipt.plan_remove_from_state(state, family)
    text = restore_text(plan)
    golden("remove-" + name.replace("save6-", "ipv6-").removeprefix("save-").removesuffix(".txt") + ".restore", text)
    after = ips.simulate_restore(state, text) if text else state
    assert fw.CHAIN not in after["nat"].chains
    assert not any(r.ours or r.target == fw.CHAIN for r in after["nat"].rules)
    assert foreign(after) == foreign(state)
    again = ipt.plan_remove_from_state(after, family)
    assert again.empty and again.notes == [f"ENVOY_EGRESS ({fw.LABELS[family]}) is not present; nothing to remove"]


def test_remove_also_deletes_uncommented_jumps_to_our_chain():
    state = ips.simulate_restore(sample("save-nft-applied.txt"), "*nat\n-A PREROUTING -p tcp -j ENVOY_EGRESS\nCOMMIT\n")
    plan = ipt.plan_remove_from_state(state)
    assert "-D PREROUTING -p tcp -j ENVOY_EGRESS" in restore_text(plan)
    assert "uncommented" in plan.changes[0].description
    after = ips.simulate_restore(state, restore_text(plan))
    assert ipt.plan_remove_from_state(after).empty


def test_apply_then_remove_returns_the_original():
    for name in ("save-nft-empty.txt", "save-nft-applied.txt"):
        original = sample(name)
        removed = ips.simulate_restore(original, restore_text(ipt.plan_remove_from_state(original)))
        applied = ips.simulate_restore(removed, restore_text(ipt.plan_from_state(removed, Settings())))
        again = ips.simulate_restore(applied, restore_text(ipt.plan_remove_from_state(applied)))
        assert ips.ruleset_diff(removed, again) == []


# --------------------------------------------------------------------------- simulator and rollback text


def test_simulator_refuses_like_iptables_and_changes_nothing():
    state = sample("save-nft-applied.txt")
    before = ips.parse_save((GOLDEN / "save-nft-applied.txt").read_text())
    with pytest.raises(StepError, match="line 3 failed: Bad rule"):
        ips.simulate_restore(state, "*nat\n-A OUTPUT -j RETURN\n-D OUTPUT -p udp -j ACCEPT\nCOMMIT\n")
    with pytest.raises(StepError, match="still referenced"):
        ips.simulate_restore(state, "*nat\n-F ENVOY_EGRESS\n-X ENVOY_EGRESS\nCOMMIT\n")
    assert ips.ruleset_diff(before, state) == [] and state["nat"].rules == before["nat"].rules


def test_simulator_insert_and_flush_semantics():
    state = ips.simulate_restore(
        {}, "*nat\n-A OUTPUT -j A1\n-A OUTPUT -j A2\n-I OUTPUT 2 -j I2\n-I OUTPUT -j I1\nCOMMIT\n"
    )
    assert [r.spec for r in state["nat"].chain_rules("OUTPUT")] == ["-j I1", "-j A1", "-j I2", "-j A2"]
    full = ips.simulate_restore(state, "*nat\n:X - [0:0]\n-A X -j RETURN\nCOMMIT\n", noflush=False)
    assert full["nat"].chain_rules("OUTPUT") == [] and full["nat"].chain_rules("X") == [ips.Rule("X", "-j RETURN")]


DROP_SSH = "*filter\n-A INPUT -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n"


def test_rollback_text_adds_tables_the_save_lacks():
    saved = (GOLDEN / "save-nft-applied.txt").read_text()
    text = guard.rollback_text(saved, DROP_SSH)
    assert text.startswith(saved) and text.endswith(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    )
    # Simulated: apply the SSH-cutting rule, then the full (flushing) rollback: identical to before.
    original = ips.parse_save(saved)
    broken = ips.simulate_restore(original, DROP_SSH)
    assert ips.ruleset_diff(original, broken) != []
    assert ips.ruleset_diff(original, ips.simulate_restore(broken, text, noflush=False)) == []
    assert guard.rollback_text(saved, fw.render_rules(Settings())) == saved


def test_strip_counters():
    a = ips.strip_counters((GOLDEN / "save-nft-applied.txt").read_text())
    assert "[" not in a.replace("[0:0]", "") and "Generated" not in a
    assert ":OUTPUT ACCEPT\n" in a and "-A OUTPUT -p tcp" in a


# --------------------------------------------------------------------------- guard shell scripts, run locally


def _fake_root(tmp_path: Path) -> dict:
    """A PATH whose iptables-restore records its input instead of touching the kernel."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "iptables-restore"
    fake.write_text(f"#!/bin/sh\ncat > {tmp_path}/restored\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.skipif(not shutil.which("setsid"), reason="needs util-linux setsid")
def test_guard_timer_fires_and_restores(tmp_path):
    files = guard.GuardFiles(str(tmp_path), "t1")
    Path(files.backup).write_text("*nat\nCOMMIT\n")
    env = _fake_root(tmp_path)
    out = subprocess.run(
        ["sh", "-c", guard.timer_script(files, 0.3)], env=env, capture_output=True, text=True, timeout=10
    )
    assert out.stdout.strip().isdigit()
    deadline = time.monotonic() + 5
    while not Path(files.path("rolled-back")).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "restored").read_text() == "*nat\nCOMMIT\n"
    assert not Path(files.backup).exists()
    late = subprocess.run(
        ["sh", "-c", guard.confirm_script(files)], env=env, capture_output=True, text=True, timeout=10
    )
    assert late.stdout.strip() == "expired"


@pytest.mark.skipif(not shutil.which("setsid"), reason="needs util-linux setsid")
def test_guard_confirm_cancels_the_timer(tmp_path):
    files = guard.GuardFiles(str(tmp_path), "t2")
    Path(files.backup).write_text("*nat\nCOMMIT\n")
    env = _fake_root(tmp_path)
    pid = int(
        subprocess.run(
            ["sh", "-c", guard.timer_script(files, 30)], env=env, capture_output=True, text=True, timeout=10
        ).stdout
    )
    ok = subprocess.run(["sh", "-c", guard.confirm_script(files)], env=env, capture_output=True, text=True, timeout=10)
    assert ok.stdout.strip() == "confirmed" and ok.stderr == ""
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / "restored").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie nobody reaped yet counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# ------------------------------------------------------------------ host-facing functions against the fake host


def loaded(name: str) -> FakeHost:
    """A fake host whose nat table is the sample ``name``."""
    host = FakeHost()
    host.nat = sample(name)
    return host


def test_missing_iptables_says_install_the_package():
    host = FakeHost()
    host.tools -= {"iptables-save", "iptables-restore"}
    with pytest.raises(StepError, match="install the `iptables` package") as e:
        ipt.plan_apply(host, Settings())
    assert "iptables-save, iptables-restore not found" in str(e.value)
    host = FakeHost({"iptables -V": (127, "", "sh: 1: iptables: not found")})
    with pytest.raises(StepError, match="install the `iptables` package"):
        ipt.backend(host)


def test_restore_failure_names_the_line_and_says_nothing_changed():
    text = fw.render_rules(Settings())
    host = FakeHost({"iptables-restore": (1, "", "iptables-restore: line 5 failed\n")})
    with pytest.raises(StepError) as e:
        guard.restore(host, text)
    msg = str(e.value)
    assert "line 5 failed" in msg and text.splitlines()[4] in msg and "Nothing was changed" in msg
    assert host.calls[-1] == ("iptables-restore --noflush", True, None, text)


def test_restore_failure_nft_wording():
    text = "*nat\n-A OUTPUT -j RETURN\n-A OUTPUT -j NO_SUCH\nCOMMIT\n"
    err = (
        "iptables-restore v1.8.9 (nf_tables): Chain 'NO_SUCH' does not exist\nError occurred at line: 3\n"
        "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n"
    )
    with pytest.raises(StepError) as e:
        guard.restore(FakeHost({"iptables-restore": (2, "", err)}), text)
    msg = str(e.value)
    assert "Chain 'NO_SUCH' does not exist Error occurred at line: 3. " in msg
    assert "The failing line 3 is: -A OUTPUT -j NO_SUCH" in msg and "Try `" not in msg


def test_plan_apply_feeds_restore_through_stdin():
    host = loaded("save-nft-empty.txt")
    plan = ipt.plan_apply(host, Settings(), guard_seconds=None)
    plan.apply(host)
    restores = [c for c in host.calls if c[0].startswith(("iptables-restore", "ip6tables-restore"))]
    assert [c[0] for c in restores] == ["iptables-restore --noflush", "ip6tables-restore --noflush"]
    assert all(sudo and user is None for _, sudo, user, _ in restores)
    assert [stdin for *_, stdin in restores] == [a.text for c in plan.changes for a in c.actions]
    assert ipt.plan_apply(host, Settings()).empty


def test_show_counters_and_empty():
    df = ipt.show(loaded("save-nft-duplicate-hook.txt"))
    assert list(df.columns) == [
        "family",
        "table",
        "chain",
        "num",
        "packets",
        "bytes",
        "target",
        "target_options",
        "match",
        "comment",
    ]
    assert set(df["family"]) == {"ipv4"}
    assert list(df["chain"]) == ["OUTPUT"] * 2 + ["ENVOY_EGRESS"] * 7
    assert list(df["num"][:2]) == [3, 4]  # positions as iptables -L --line-numbers shows them
    assert str(df["packets"].dtype) == "int64" and df["packets"].sum() == 6 + 1 + 1 + 2 + 2
    assert df.iloc[7]["target_options"] == "--to-ports 12003"
    empty = ipt.show(loaded("save-nft-empty.txt"))
    assert empty.empty and list(empty.columns) == list(df.columns)


# ------------------------------------------------------------------ two address families on the fake host

#: /proc/net/if_inet6 and the ::/0 lines of /proc/net/ipv6_route as a dual-stack EC2 instance prints them.
PROC_DUAL_STACK = """tool iptables
tool iptables-save
tool iptables-restore
kernel-ipv6
addr 00000000000000000000000000000001 01 80 10 80       lo
addr 26001f1800a1b20000000000000000a1 02 80 00 80     ens5
addr fe80000000000000085a6bfffe3c1d2f 02 40 20 80     ens5
route 00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000085a6bfffe000001 \
00000400 00000001 00000000 00000003 ens5
route 00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 \
ffffffff 00000001 00000000 00200200       lo
""".replace("\\\n", "")


def test_parse_families_reads_the_kernel_tables():
    fam = ipt.parse_families(PROC_DUAL_STACK)
    assert fam.ipv6_kernel and fam.has_ipv6 and fam.ipv6_default_route
    assert fam.ipv6_addresses == ("2600:1f18:00a1:b200:0000:0000:0000:00a1",)  # neither ::1 nor fe80::
    assert fam.has_tools("ipv4") and not fam.has_tools("ipv6")
    # Only the kernel's unreachable default on lo and link-local addresses: no IPv6 beyond the link.
    local = "\n".join(line for line in PROC_DUAL_STACK.splitlines() if "ens5" not in line or "fe80" in line[5:9])
    assert not ipt.parse_families(local).has_ipv6
    assert not ipt.parse_families("").ipv6_kernel


def test_host_with_ipv6_but_no_ip6tables_is_refused_before_any_change():
    host = loaded("save-nft-empty.txt")
    host.tools -= {"ip6tables", "ip6tables-save", "ip6tables-restore"}
    host.ipv6_addresses = ["20010db8000100000000000000000001"]
    with pytest.raises(StepError) as e:
        ipt.apply(host, Settings(), guard_seconds=None)
    msg = str(e.value)
    assert "has IPv6 (2001:0db8:0001:0000:0000:0000:0000:0001) but no ip6tables" in msg
    assert "half open" in msg and "Nothing was changed" in msg
    assert not any(c[0].startswith("iptables-restore") for c in host.calls)
    assert fw.CHAIN not in host.nat["nat"].chains


def test_host_without_ipv6_or_ip6tables_gets_ipv4_only():
    host = loaded("save-nft-empty.txt")
    host.tools -= {"ip6tables", "ip6tables-save", "ip6tables-restore"}
    plan = ipt.apply(host, Settings(), guard_seconds=None)
    assert [a.family for c in plan.changes for a in c.actions] == ["ipv4"]
    assert "no IPv6 address or route and no ip6tables" in plan.notes[-1]
    assert set(ipt.show(host)["family"]) == {"ipv4"}
    host.ipv6_kernel = False
    host.tools |= {"ip6tables", "ip6tables-save", "ip6tables-restore"}
    assert ipt.plan_apply(host, Settings()).empty


def test_apply_and_remove_both_families_and_keep_foreign_rules():
    host = loaded("save-nft-applied.txt")
    host.nat6 = sample("save6-nft-applied.txt")
    host.nat6 = ips.simulate_restore(host.nat6, "*nat\n-F ENVOY_EGRESS\nCOMMIT\n")  # half gone: rewritten
    plan = ipt.apply(host, Settings(), guard_seconds=None)
    assert [a.family for c in plan.changes for a in c.actions] == ["ipv6"]
    df = ipt.show(host)
    assert df.groupby("family").size().to_dict() == {"ipv4": 10, "ipv6": 10}
    removed = ipt.remove(host)
    assert [a.family for c in removed.changes for a in c.actions] == ["ipv4", "ipv6"]
    assert ipt.show(host).empty
    for table in (host.nat, host.nat6):
        assert [r.target for r in table["nat"].rules] == ["DOCKER", "MASQUERADE"]


def test_remove_on_a_host_without_iptables_is_a_clean_no_op():
    host = FakeHost()
    host.tools = set()
    plan = ipt.remove(host)
    assert plan.empty
    assert plan.notes == [
        "iptables is not installed on admin@fake:22: no IPv4 rules of ours are there",
        "ip6tables is not installed on admin@fake:22: no IPv6 rules of ours are there",
    ]
    assert ipt.show(host).empty
