"""The command line's bad-input matrix: one clear paragraph, exit 2, no traceback, nothing changed."""

import os
import subprocess
import sys

import pytest

from tproxy_nb.render import certs, envoy
from tproxy_nb.render.pki import ssh_keypair, write_private
from tproxy_nb.steps import chain, envoy_proc, provision


def cli(*args, check_code=None, env=None):
    p = subprocess.run(
        [sys.executable, "-m", "tproxy_nb.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )
    if check_code is not None:
        assert p.returncode == check_code, (p.returncode, p.stdout, p.stderr)
    return p


def assert_one_paragraph(p, *needles):
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def test_malformed_settings_name_file_and_line(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("ports:\n  igw: [12010\n")
    assert_one_paragraph(cli("provision", "--plan", "--settings", str(f)), str(f), "line")


def test_setting_of_wrong_type_or_range(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("ports: {igw: 99999}\n")
    assert_one_paragraph(cli("iptables", "apply", "--plan", "--settings", str(f)), "ports.igw", "out of range")
    f.write_text("envoy: {user: 'x; rm -rf /'}\n")
    assert_one_paragraph(cli("provision", "--settings", str(f)), "envoy.user")


def test_missing_settings_file(tmp_path):
    assert_one_paragraph(cli("check", "--settings", str(tmp_path / "missing.yaml")), "does not exist")


def test_unreachable_target(tmp_path, closed_port):
    private, _ = ssh_keypair("t")
    write_private(tmp_path / "k", private)
    p = cli("check", "--target", f"nobody@127.0.0.1:{closed_port}", "--key", str(tmp_path / "k"))
    assert_one_paragraph(p, "Cannot connect to 127.0.0.1")


def test_key_with_a_passphrase_and_none_given(tmp_path, closed_port):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"secret"),
    )
    write_private(tmp_path / "k", key)
    p = cli("check", "--target", f"nobody@127.0.0.1:{closed_port}", "--key", str(tmp_path / "k"))
    assert_one_paragraph(p, "passphrase")


def test_bad_target_syntax():
    assert_one_paragraph(cli("check", "--target", "admin@"), "user@host")


@pytest.mark.lab
def test_wrong_key(lab_info, tmp_path):
    private, _ = ssh_keypair("wrong")
    write_private(tmp_path / "k", private)
    p = cli(
        "check",
        "--target",
        f"{lab_info.user}@{lab_info.host}",
        "--key",
        str(tmp_path / "k"),
        "--known-hosts",
        lab_info.known_hosts,
    )
    assert_one_paragraph(p, "refused the key")


@pytest.mark.lab
def test_unknown_host_key_shows_the_fingerprint(lab_info, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    p = cli(
        "check", "--target", f"{lab_info.user}@{lab_info.host}", "--key", lab_info.key_file, "--known-hosts", str(kh)
    )
    assert_one_paragraph(p, lab_info.host_key_fingerprint)
    assert kh.read_text() == ""


@pytest.fixture
def nosudo_user(host, lab_info, tmp_path):
    """A second login user without sudo rights (marked, so lab down removes it too)."""
    private, public = ssh_keypair("nosudo")
    write_private(tmp_path / "nosudo", private)
    host.run(
        "id tpx-nosudo >/dev/null 2>&1 || useradd -m -s /bin/bash -c 'tproxy-nb test user' tpx-nosudo; "
        "usermod -p '*' tpx-nosudo",
        sudo=True,
    )
    host.run("install -d -m 700 -o tpx-nosudo -g tpx-nosudo ~tpx-nosudo/.ssh", sudo=True)
    host.put_text(
        public + "\n", "/home/tpx-nosudo/.ssh/authorized_keys", mode=0o600, owner="tpx-nosudo", group="tpx-nosudo"
    )
    yield tmp_path / "nosudo"
    host.run("userdel -r -f tpx-nosudo", sudo=True, check=False)


@pytest.mark.lab
def test_login_user_without_sudo_changes_nothing(lab_info, nosudo_user, host):
    before = host.run("getent passwd | sort; ls /opt", sudo=True, check=False).stdout
    p = cli(
        "provision",
        "--target",
        f"tpx-nosudo@{lab_info.host}",
        "--key",
        str(nosudo_user),
        "--known-hosts",
        lab_info.known_hosts,
    )
    assert_one_paragraph(p, "cannot run sudo")
    assert host.run("getent passwd | sort; ls /opt", sudo=True, check=False).stdout == before


@pytest.fixture(scope="module")
def provisioned(host, settings):
    list(provision.provision(host, settings))
    try:
        yield settings
    finally:
        chain.down(host, settings)


@pytest.mark.lab
def test_config_that_fails_validation_is_named_and_nothing_starts(host, provisioned):
    cfg = envoy.config_path(provisioned, "igw")
    good = host.get(cfg, sudo=True)
    try:
        host.put_text(
            good.replace("stat_prefix", "stat_prefixx", 1), cfg, mode=0o640, owner="root", group=provisioned.envoy.group
        )
        p = cli("envoy", "start")
        assert_one_paragraph(p, "igw")
        assert not envoy_proc.status(host, provisioned)["running"].any()
    finally:
        host.put_text(good, cfg, mode=0o640, owner="root", group=provisioned.envoy.group)


@pytest.mark.lab
def test_port_in_use_names_port_and_process(host, provisioned):
    port = provisioned.ports.igw
    host.run(
        f"setsid sh -c 'exec /usr/bin/python3 -c \"import socket,time; s=socket.socket(); "
        f's.bind((\\"127.0.0.1\\", {port})); s.listen(); time.sleep(60)"\' >/dev/null 2>&1 < /dev/null &',
        sudo=True,
    )
    try:
        host.run(f"for i in $(seq 50); do ss -ltn | grep -q ':{port} ' && exit 0; sleep 0.1; done; exit 1", timeout=30)
        p = cli("envoy", "start")
        assert_one_paragraph(p, str(port), "python3")
        assert not envoy_proc.status(host, provisioned)["running"].any()
    finally:
        host.run(
            f"ss -ltnpH 'sport = :{port}' | grep -o 'pid=[0-9]*' | cut -d= -f2 | xargs -r kill", sudo=True, check=False
        )


@pytest.mark.lab
def test_envoy_binary_missing(host, provisioned):
    path = provisioned.paths.envoy
    host.run(["mv", path, path + ".away"], sudo=True)
    try:
        p = cli("envoy", "start")
        assert_one_paragraph(p, path)
    finally:
        host.run(["mv", path + ".away", path], sudo=True)


@pytest.mark.lab
def test_check_exit_code_1_when_an_outcome_differs(host, provisioned):
    # Envoys and rules are not up: curl goes direct, so the denied cases come out "allowed".
    p = cli("check", "--json")
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_run_with_a_missing_settings_file_stops_before_any_notebook(tmp_path):
    p = cli("run", "--settings", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "report"))
    assert_one_paragraph(p, "missing.yaml", "does not exist")
    assert not (tmp_path / "report").exists()


@pytest.fixture
def curl_hidden(host):
    """/usr/bin/curl replaced by an empty, non-executable file for the lab host's sessions only.

    The bind mount lives in the mount namespace of the lab's sshd (and so of every SSH session);
    the machine's own curl is untouched.
    """
    from tproxy_nb import lab

    sshd = (lab.STATE_DIR / "sshd.pid").read_text().strip()
    enter = ["nsenter", "-t", sshd, "-m", "--"]
    subprocess.run([*enter, "mount", "--bind", "/dev/null", "/usr/bin/curl"], check=True)
    try:
        yield
    finally:
        subprocess.run([*enter, "umount", "/usr/bin/curl"], check=True)


@pytest.mark.lab
def test_curl_missing_on_the_target(lab_info, host, curl_hidden):
    assert host.run("command -v curl", check=False).exit_code != 0
    assert_one_paragraph(cli("check"), "curl is not installed", "apt-get install")


@pytest.mark.parametrize(
    "args", [["check", "--repeat", "0"], ["iptables", "apply", "--guard", "-1"], ["check", "--repeat", "x"]]
)
def test_non_positive_numbers_are_usage_errors(args):
    p = cli(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "must be above zero" in p.stderr or "is not a number" in p.stderr


@pytest.mark.lab
def test_a_root_directory_we_did_not_make_is_never_taken_over(host, tmp_path):
    host.run("mkdir -p /opt/tpx-foreign && echo precious > /opt/tpx-foreign/data", sudo=True)
    f = tmp_path / "s.yaml"
    f.write_text("paths: {root: /opt/tpx-foreign}\n")
    accounts = host.run("getent passwd | sort").stdout
    try:
        assert_one_paragraph(cli("provision", "--settings", str(f)), "/opt/tpx-foreign", "not made by tproxy-nb")
        assert host.run("cat /opt/tpx-foreign/data", sudo=True).stdout == "precious\n"
        assert host.stat("/opt/tpx-foreign/.tproxy-nb", sudo=True) is None
        assert host.run("getent passwd | sort").stdout == accounts  # refused before any change
    finally:
        host.run("rm -rf /opt/tpx-foreign", sudo=True)


@pytest.mark.lab
def test_a_dry_run_writes_nothing_not_even_local_keys(lab_info, host, tmp_path):
    local = tmp_path / "certs"
    state = "getent passwd | sort; getent group | sort; ls -lR /opt 2>&1"
    before = host.run(state, sudo=True, check=False).stdout
    p = cli("provision", "--plan", env={certs.DIR_ENV: str(local)})
    assert p.returncode == 0, p.stderr
    made = "client-ca, server-ca, sidecar, igw, igw_http, egress-ca, deny-www.lyft.com"
    assert f"(local) generate {made} in {local}" in p.stdout
    assert "size and sha256 known once the local file is generated" in p.stdout
    assert "BEGIN" not in p.stdout and "<lambda" not in p.stdout
    assert not local.exists(), "a dry run created the local certificate directory"
    assert host.run(state, sudo=True, check=False).stdout == before
