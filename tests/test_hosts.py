"""Pure tests of command building, quoting, targets and Result."""

import pytest

from tproxy_nb.errors import CommandError, ConnectError
from tproxy_nb.remote.host import Result, build_command, mask_secrets, parse_target, to_shell


def test_list_commands_are_quoted_word_by_word():
    assert to_shell(["echo", "a b", "x; rm -rf /"]) == "echo 'a b' 'x; rm -rf /'"


def test_string_commands_are_used_as_is():
    assert to_shell("ls -l | wc -l") == "ls -l | wc -l"


def test_sudo_and_user_wrapping_keeps_the_command_one_argument():
    assert build_command(["id", "-u"], sudo=True) == "sudo -n -- sh -c 'id -u'"
    assert build_command("echo $HOME", user="tpx-svc") == "sudo -n -H -u tpx-svc -- sh -c 'echo $HOME'"


def test_timeout_wraps_outermost():
    cmd = build_command("sleep 5", sudo=True, timeout=2)
    assert cmd.startswith("timeout -k 3 2 sh -c ")
    assert "sudo -n" in cmd


@pytest.mark.parametrize(
    "target,expected",
    [
        ("admin@198.18.0.2", ("admin", "198.18.0.2", None)),
        ("admin@198.18.0.2:2222", ("admin", "198.18.0.2", 2222)),
        ("ec2-box", (None, "ec2-box", None)),
        ("root@[2001:db8::1]:22", ("root", "2001:db8::1", 22)),
    ],
)
def test_parse_target(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("bad", ["admin@", "a b@host", ""])
def test_bad_targets_say_how_to_write_one(bad):
    with pytest.raises(ConnectError, match="user@host"):
        parse_target(bad)


def test_port_out_of_range_is_refused():
    with pytest.raises(ConnectError, match="out of range"):
        parse_target("admin@host:99999")


def test_result_tail_ok_and_repr():
    r = Result("printf x", 0, "a\nb\nc\n", "e1\ne2\n", 0.01234, "u@h:22")
    assert r.ok
    assert r.tail(2) == "b\nc"
    assert r.tail(1, "stderr") == "e2"
    assert repr(r) == "<Result exit=0 0.012s 'printf x'>"


def test_command_error_carries_result_and_stderr_tail():
    r = Result("false", 3, "", "line1\nboom\n", 0.1, "u@h:22")
    err = CommandError(r)
    assert err.result is r
    assert "exit code 3" in str(err) and "boom" in str(err) and "false" in str(err)


def test_private_keys_are_masked_in_printed_commands():
    begin, end = "-----BEGIN " + "PRIVATE KEY-----", "-----END " + "PRIVATE KEY-----"
    text = f"echo '{begin}\nMIIE\n{end}' > k"
    masked = mask_secrets(text)
    assert "MIIE" not in masked and "***masked***" in masked
    assert "MIIE" not in Result(text, 1, "", "", 0).display_cmd
