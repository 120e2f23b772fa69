"""SSH as people configure it, against real sshds: an ssh_config alias, a bastion reached by ProxyJump
and by ProxyCommand, a key that lives only in a test-started ssh-agent, a passphrase from the environment.

The bastion has its own namespace and sshd (``tproxy_nb.lab.bastion``); a connection through it reaches
the lab's host from 198.18.3.1, which the host reports in ``$SSH_CONNECTION``. Every process started here
is stopped by its PID, and the bastion and any added ``authorized_keys`` line are removed even on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tproxy_nb.errors import ConnectError, HostKeyError
from tproxy_nb.lab import bastion
from tproxy_nb.remote.host import Host
from tproxy_nb.render.pki import ssh_keypair, write_private

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def jump(lab_info):
    """The bastion, up for this module and down afterwards whatever happens."""
    info = bastion.up()
    try:
        yield info
    finally:
        bastion.down()
        assert bastion.leftovers() == []


@pytest.fixture
def ssh_dir(tmp_path, lab_info, jump):
    """A known_hosts with both host keys and the lab key; ``config(text)`` writes an ssh_config there."""
    kh = tmp_path / "known_hosts"
    kh.write_text(Path(lab_info.known_hosts).read_text() + jump.known_hosts_line + "\n")

    def config(body: str) -> Path:
        path = tmp_path / "config"
        path.write_text(body.format(key=lab_info.key_file, kh=kh, cfg=path, host=lab_info.host, bastion=jump.host))
        return path

    return config


BASTION = """
Host tpx-bastion
    HostName {bastion}
    User tpx-admin
    IdentityFile {key}
    UserKnownHostsFile {kh}
"""
#: The lab's host under an alias; each test adds how it is reached.
TARGET = """
Host tpx-target
    HostName {host}
    User tpx-admin
    IdentityFile {key}
    UserKnownHostsFile {kh}
"""
JUMP = "    ProxyJump tpx-bastion\n"


def came_from(host: Host) -> str:
    """The address the target's sshd saw the connection come from."""
    return host.run("echo $SSH_CONNECTION").stdout.split()[0]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tproxy_nb.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_proxyjump_alias_reaches_the_host_through_the_bastion(ssh_dir, lab_info):
    cfg = ssh_dir(BASTION + TARGET + JUMP + "    IdentitiesOnly yes\n")
    # The rule users expect: ssh itself gets in with this config ...
    ssh = subprocess.run(["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "tpx-target", "true"], timeout=60)
    assert ssh.returncode == 0
    # ... and so does tproxy-nb, with the alias as the target, through the bastion.
    with Host.from_target("tpx-target", ssh_config=cfg) as h:
        assert came_from(h) == bastion.INNER_ADDR
        assert h.run("id -un").stdout.strip() == lab_info.user
    p = cli("envoy", "status", "--target", "tpx-target", "--ssh-config", str(cfg))
    assert p.returncode == 0, p.stderr


def test_proxycommand_reaches_the_host_and_is_stopped_on_close(ssh_dir):
    cfg = ssh_dir(BASTION + TARGET + "    ProxyCommand ssh -F {cfg} -o BatchMode=yes -W %h:%p tpx-bastion\n")
    h = Host.from_target("tpx-target", ssh_config=cfg)
    try:
        assert came_from(h) == bastion.INNER_ADDR
        proxy = h._proxy.process
    finally:
        h.close()
    assert proxy.poll() is not None  # the ssh -W process is gone, reaped


def test_an_unknown_jump_host_key_is_refused_with_its_fingerprint(ssh_dir, lab_info, jump, tmp_path):
    only_target = tmp_path / "target_only"
    only_target.write_text(Path(lab_info.known_hosts).read_text())
    cfg = ssh_dir(BASTION.replace("{kh}", str(only_target)) + TARGET + JUMP)
    with pytest.raises(HostKeyError) as e:
        Host.from_target("tpx-target", ssh_config=cfg).run("true")
    assert jump.host_key_fingerprint in str(e.value) and jump.host in str(e.value)
    assert only_target.read_text() == Path(lab_info.known_hosts).read_text()  # nothing added


def test_a_target_reached_through_a_proxy_says_how_to_accept_its_key(ssh_dir, lab_info, tmp_path):
    cfg = ssh_dir(BASTION + TARGET + JUMP)
    empty = tmp_path / "empty"
    empty.write_text("")
    # --known-hosts replaces the target's file; the bastion is still found in its own.
    p = cli("envoy", "status", "--target", "tpx-target", "--ssh-config", str(cfg), "--known-hosts", str(empty))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert lab_info.host_key_fingerprint in p.stderr and "ssh -o UserKnownHostsFile" in p.stderr
    assert empty.read_text() == ""


@contextmanager
def authorized(lab_info, public: str):
    """``public`` in the lab login user's authorized_keys for the block (the host and bastion share it)."""
    auth = Path(os.path.expanduser(f"~{lab_info.user}")) / ".ssh" / "authorized_keys"
    before = auth.read_text()
    auth.write_text(before + public + "\n")
    try:
        yield
    finally:
        auth.write_text(before)


@contextmanager
def ssh_agent(tmp_path: Path):
    """A test's own ssh-agent on a socket in ``tmp_path``, stopped by its PID afterwards."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_key_only_in_ssh_agent_logs_in_through_the_bastion(ssh_dir, lab_info, tmp_path, monkeypatch):
    private, public = ssh_keypair("agent-only")
    key = tmp_path / "agent_key"
    write_private(key, private)
    cfg = ssh_dir(
        """
Host tpx-bastion
    HostName {bastion}
    User tpx-admin
    UserKnownHostsFile {kh}

Host tpx-target
    HostName {host}
    User tpx-admin
    UserKnownHostsFile {kh}
    ProxyJump tpx-bastion

Host tpx-only
    HostName {host}
    User tpx-admin
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {kh}
    ProxyJump tpx-bastion
""".replace("{key}", str(tmp_path / "not_authorized"))
    )
    write_private(tmp_path / "not_authorized", ssh_keypair("not authorized")[0])
    with authorized(lab_info, public), ssh_agent(tmp_path) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        subprocess.run(["ssh-add", "-q", str(key)], check=True, timeout=30, env={**os.environ})
        key.unlink()  # from now on the key exists only inside the agent
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* of the machine's own to fall back on
        with Host.from_target("tpx-target", ssh_config=cfg) as h:
            assert came_from(h) == bastion.INNER_ADDR
        # IdentitiesOnly: the agent's key is not offered, only the (unauthorized) file is.
        with pytest.raises(ConnectError, match="refused the key"):
            Host.from_target("tpx-only", ssh_config=cfg).run("true")


def test_a_passphrase_from_a_named_environment_variable(lab_info, tmp_path):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is missing")
    key = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-C", "locked", "-f", str(key)],
        check=True,
        timeout=30,
    )
    target = ["--target", f"{lab_info.user}@{lab_info.host}", "--key", str(key), "--known-hosts", lab_info.known_hosts]
    with authorized(lab_info, (tmp_path / "locked.pub").read_text().strip()):
        p = cli("envoy", "status", *target, env={"SSH_AUTH_SOCK": ""})
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert str(key) in p.stderr and "--passphrase-env" in p.stderr and "ssh-add" in p.stderr
        p = cli("envoy", "status", *target, "--passphrase-env", "TPX_PASS", env={"TPX_PASS": "open sesame"})
        assert p.returncode == 0, p.stderr
        p = cli("envoy", "status", *target, "--passphrase-env", "TPX_PASS", env={"TPX_PASS": "wrong"})
        assert p.returncode == 2 and "does not open" in p.stderr, p.stderr
