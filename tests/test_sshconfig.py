"""ssh_config resolution, as ``ssh`` resolves it: pure, no socket, no agent."""

from pathlib import Path

import pytest

from tproxy_nb.errors import ConnectError
from tproxy_nb.remote.keys import Passphrase
from tproxy_nb.remote.sshconfig import load_config, parse_target, resolve

CONFIG = """
Host web
    HostName 203.0.113.10
    User admin
    Port 2222
    IdentityFile ~/.ssh/web_ed25519
    IdentityFile /keys/second
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts_web
    ProxyJump bastion

Host bastion
    HostName 198.51.100.7
    User jump
    ProxyJump outer

Host outer
    HostName 192.0.2.1

Host two
    HostName 10.0.0.5
    ProxyJump ops@first:2200,second

Host second
    HostName 10.0.0.2
    ProxyJump never-used

Host ssm
    HostName i-0123456789
    User ec2-user
    ProxyCommand sh -c "aws ssm start-session --target %h --document-name SSH --parameters portNumber=%p"

Host cmd
    HostName 10.1.1.1
    ProxyCommand ssh -W %h:%p -l %r bastion

Host both
    ProxyJump bastion
    ProxyCommand nc %h %p

Host loop
    ProxyJump loop

Host direct
    ProxyJump none
"""


@pytest.fixture
def cfg():
    return load_config(text=CONFIG)


def test_alias_gives_hostname_user_port_keys_and_known_hosts(cfg):
    r = resolve("web", config=cfg, local_user="me")
    assert (r.hostname, r.port, r.user) == ("203.0.113.10", 2222, "admin")
    assert r.identity_files == (Path("~/.ssh/web_ed25519").expanduser(), Path("/keys/second"))
    assert r.identities_only is True
    assert r.known_hosts[0] == Path("~/.ssh/known_hosts_web").expanduser()
    assert Path("/etc/ssh/ssh_known_hosts") in r.known_hosts


def test_command_line_wins_over_the_config(cfg):
    r = resolve("web", user="root", port=22, config=cfg, key_file="~/k", known_hosts="/tmp/kh")
    assert (r.user, r.port) == ("root", 22)
    assert r.identity_files[0] == Path("~/k").expanduser()  # --key first, then the config's
    assert len(r.identity_files) == 3
    assert r.known_hosts == (Path("/tmp/kh"),)


def test_proxyjump_hops_are_resolved_through_the_config(cfg):
    r = resolve("web", config=cfg, local_user="me")
    hops = r.jumps()
    assert [(h.hostname, h.user) for h in hops] == [("192.0.2.1", "me"), ("198.51.100.7", "jump")]
    assert r.via == "ProxyJump bastion"


def test_proxyjump_list_reaches_each_hop_through_the_one_before(cfg):
    r = resolve("two", config=cfg, local_user="me")
    hops = r.jumps()
    assert [h.name for h in hops] == ["ops@first:2200", "me@10.0.0.2:22"]
    assert hops[1].jump is hops[0]  # its own "ProxyJump never-used" is overridden, as ssh -J does


def test_jump_hosts_are_checked_against_the_named_known_hosts_and_their_own(cfg):
    r = resolve("web", config=cfg, known_hosts="/tmp/kh")
    assert r.known_hosts == (Path("/tmp/kh"),)
    assert r.jump is not None and r.jump.known_hosts[0] == Path("/tmp/kh")
    assert Path("~/.ssh/known_hosts").expanduser() in r.jump.known_hosts


def test_proxycommand_tokens_are_expanded(cfg):
    assert resolve("ssm", config=cfg).proxy_command == (
        'sh -c "aws ssm start-session --target i-0123456789 --document-name SSH --parameters portNumber=22"'
    )
    assert resolve("cmd", user="ops", config=cfg).proxy_command == "ssh -W 10.1.1.1:22 -l ops bastion"


def test_proxyjump_and_proxycommand_together_is_refused(cfg):
    with pytest.raises(ConnectError, match="both ProxyJump and ProxyCommand"):
        resolve("both", config=cfg)


def test_a_jump_loop_is_refused(cfg):
    with pytest.raises(ConnectError, match="loop"):
        resolve("loop", config=cfg)


def test_none_disables_and_unknown_hosts_get_defaults(cfg):
    r = resolve("direct", config=cfg, local_user="me")
    assert r.jump is None and r.proxy_command is None
    r = resolve("198.18.0.2", config=None, local_user="me")
    assert (r.hostname, r.port, r.user, r.identities_only) == ("198.18.0.2", 22, "me", False)
    assert r.identity_files[-1] == Path("~/.ssh/id_ed25519").expanduser()
    assert r.known_hosts[0] == Path("~/.ssh/known_hosts").expanduser()


def test_a_bad_port_in_the_config_names_it():
    with pytest.raises(ConnectError, match="Port 'ssh'"):
        resolve("x", config=load_config(text="Host x\n  Port ssh\n"))


def test_a_named_config_that_does_not_exist(tmp_path):
    with pytest.raises(ConnectError, match="does not exist"):
        load_config(tmp_path / "nope")
    assert load_config(text="").lookup("x")["hostname"] == "x"


@pytest.mark.parametrize(
    "target,expected",
    [
        ("web", (None, "web", None)),
        ("admin@web:2222", ("admin", "web", 2222)),
        ("admin@[2001:db8::2]:22", ("admin", "2001:db8::2", 22)),
    ],
)
def test_parse_target_takes_aliases(target, expected):
    assert parse_target(target) == expected


def test_passphrase_from_a_named_variable(monkeypatch):
    monkeypatch.setenv("MY_PASS", "s3cret")
    p = Passphrase.from_env("MY_PASS")
    assert p.get(Path("k")) == "s3cret" and "MY_PASS" in p.origin
    monkeypatch.delenv("MY_PASS")
    with pytest.raises(ConnectError, match="MY_PASS, but it is not set"):
        Passphrase.from_env("MY_PASS")
    assert Passphrase.from_env(None, prompt=False).get(Path("k")) is None
