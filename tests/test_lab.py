"""The lab and the SSH host layer, for real: sshd in a namespace, paramiko, sudo, curl, SFTP."""

import hashlib
import io
import json
import subprocess
import sys

import pytest

from tproxy_nb import lab
from tproxy_nb.errors import CommandError, CommandTimeout, ConnectError, HostKeyError
from tproxy_nb.remote.host import Host, fetch_host_key, fingerprint

pytestmark = pytest.mark.lab


def test_status_json_has_the_documented_fields(lab_info):
    out = subprocess.run(
        [sys.executable, "-m", "tproxy_nb.cli", "lab", "status", "--json"], capture_output=True, text=True, check=True
    )
    data = json.loads(out.stdout)
    for key in ("host", "port", "user", "key_file", "host_key_fingerprint", "namespaces", "healthy"):
        assert key in data
    assert data["healthy"] is True
    assert data["host"].startswith("198.18.")
    assert sorted(data["namespaces"]) == sorted(lab.NAMESPACES)


def test_pinned_host_key_is_the_one_sshd_presents(lab_info):
    assert fingerprint(fetch_host_key(lab_info.host, lab_info.port)) == lab_info.host_key_fingerprint


def test_up_twice_is_a_no_op(lab_info):
    again = lab.up()
    assert again.healthy and again.host_key_fingerprint == lab_info.host_key_fingerprint


def test_login_user_and_passwordless_sudo(host, lab_info):
    assert host.run("id -un").stdout.strip() == lab_info.user
    assert host.run("sudo -n true").ok
    assert host.run("id -u", sudo=True).stdout.strip() == "0"


def test_one_connection_is_reused(host):
    host.run("true")
    transport = host.connect().get_transport()
    host.run("true")
    assert host.connect().get_transport() is transport


def test_names_resolve_inside_the_host_only(host):
    for name in lab.SITES:
        out = host.run(["getent", "ahosts", name]).stdout.split()
        # Both families, IPv6 first: the order a dual-stack resolver gives and curl follows.
        assert out[0] == lab.SITES6[name] and lab.SITES[name] in out, out


@pytest.mark.parametrize("flag", ["-4", "-6"])
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("site", ["www.google.com", "www.lyft.com"])
def test_stand_in_sites_answer_with_their_name_and_lab_ca(host, scheme, site, flag):
    # https verifies against the host's trust store, which holds the lab CA; over IPv4 and over IPv6.
    r = host.run(["curl", flag, "-sS", "-w", "\n%{http_code}", f"{scheme}://{site}/"])
    body, code = r.stdout.rsplit("\n", 1)
    assert code == "200"
    assert site in body


def test_large_output_does_not_deadlock(host):
    r = host.run("head -c 8000000 /dev/zero | base64 -w 0", timeout=60)
    assert len(r.stdout) > 10_000_000


def test_nonzero_exit_raises_with_result_unless_check_false(host):
    with pytest.raises(CommandError) as e:
        host.run("echo oops >&2; exit 7")
    assert e.value.result.exit_code == 7 and "oops" in str(e.value)
    assert host.run("exit 7", check=False).exit_code == 7


def test_timeout_kills_a_long_command(host):
    with pytest.raises(CommandTimeout, match="timed out after 1 s"):
        host.run("sleep 30", timeout=1)
    assert "sleep 30" not in host.run("ps -eo args", check=False).stdout.splitlines()


def test_transfer_both_ways_with_hash_mode_and_skip(host, tmp_path):
    data = b"tproxy-nb \x00\xff bytes\n" * 1000
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    remote = "/tmp/tpx-test/blob.bin"
    assert host.put(local, remote, mode=0o640) is True
    assert host.stat(remote)["mode"] == 0o640
    assert host.sha256(remote) == hashlib.sha256(data).hexdigest()
    assert host.put(local, remote, mode=0o640) is False  # same hash and mode: skipped
    back = host.get(remote, tmp_path / "back.bin")
    assert back.read_bytes() == data
    assert host.put(io.StringIO("hello\n"), "/tmp/tpx-test/root.txt", mode=0o600, owner="root") is True
    assert host.stat("/tmp/tpx-test/root.txt", sudo=True) == {"mode": 0o600, "owner": "root", "group": "root"}
    assert host.get("/tmp/tpx-test/root.txt", sudo=True) == "hello\n"
    # Same content, another mode: fixed in place, reported as a change.
    assert host.put(io.StringIO("hello\n"), "/tmp/tpx-test/root.txt", mode=0o644, owner="root") is True
    assert host.stat("/tmp/tpx-test/root.txt", sudo=True)["mode"] == 0o644
    # A failing install is an error with the reason, and the private staging directory never stays behind.
    before = host.run(["ls", "-a", "/tmp"], sudo=True).stdout
    with pytest.raises(CommandError, match="no-such-user"):
        host.put(io.StringIO("x\n"), "/tmp/tpx-test/bad.txt", owner="no-such-user")
    assert host.run(["ls", "-a", "/tmp"], sudo=True).stdout == before
    host.run("rm -rf /tmp/tpx-test", sudo=True)


def test_wrong_key_is_a_clear_error(lab_info, tmp_path):
    from tproxy_nb.render.pki import ssh_keypair, write_private

    private, _ = ssh_keypair("wrong")
    write_private(tmp_path / "wrong", private)
    h = Host(lab_info.host, user=lab_info.user, key_file=tmp_path / "wrong", known_hosts=lab_info.known_hosts)
    with pytest.raises(ConnectError, match="refused the key"):
        h.run("true")


def test_unknown_host_key_is_refused_with_fingerprint(lab_info, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    h = Host(lab_info.host, user=lab_info.user, key_file=lab_info.key_file, known_hosts=empty)
    with pytest.raises(HostKeyError) as e:
        h.run("true")
    assert lab_info.host_key_fingerprint in str(e.value)
    assert "trust_host_key" in str(e.value)
    assert empty.read_text() == ""  # never a silent add


def test_changed_host_key_is_refused(lab_info, tmp_path):
    from tproxy_nb.render.pki import ssh_keypair

    _, other = ssh_keypair("impostor")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{lab_info.host} {' '.join(other.split()[:2])}\n")
    h = Host(lab_info.host, user=lab_info.user, key_file=lab_info.key_file, known_hosts=kh)
    with pytest.raises(HostKeyError, match="CHANGED"):
        h.run("true")


def test_trust_host_key_adds_only_the_expected_key(lab_info, tmp_path):
    from tproxy_nb.remote.host import trust_host_key

    kh = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError):
        trust_host_key(lab_info.host, lab_info.port, "SHA256:not-it", known_hosts=kh)
    assert not kh.exists()
    trust_host_key(lab_info.host, lab_info.port, lab_info.host_key_fingerprint, known_hosts=kh)
    h = Host(lab_info.host, user=lab_info.user, key_file=lab_info.key_file, known_hosts=kh)
    assert h.run("true").ok


def test_closed_port_is_a_clear_error(lab_info, closed_port):
    h = Host(
        "127.0.0.1",
        user="nobody",
        port=closed_port,
        key_file=lab_info.key_file,
        known_hosts=lab_info.known_hosts,
        connect_timeout=2,
    )
    with pytest.raises(ConnectError, match="Cannot connect to 127.0.0.1"):
        h.run("true")


def test_reconnects_after_the_connection_drops(host):
    host.run("true")
    host.connect().get_transport().close()
    assert host.run("echo back").stdout.strip() == "back"


def test_connection_lost_mid_command_is_a_connect_error(host):
    import threading

    transport = host.connect().get_transport()
    threading.Timer(0.5, transport.close).start()
    with pytest.raises(ConnectError, match="Lost the SSH connection"):
        host.run("sleep 5", timeout=20)
    assert host.run("echo back").stdout.strip() == "back"


def test_large_stdin_with_large_output_does_not_deadlock(host):
    data = "x" * 4_000_000 + "\n"
    r = host.run("cat; head -c 3000000 /dev/zero | base64 -w 0", stdin=data, timeout=60)
    assert r.stdout.startswith("x" * 1000) and len(r.stdout) > 8_000_000
