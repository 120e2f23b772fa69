"""A full cycle against ``lab:rootfs``, a host with its own Debian root filesystem: not the machine running the tests.

Accounts, files and Envoy's shared memory must land in that host (its /etc/passwd, its /opt, its own /dev/shm
mount) and nowhere here; ``lab down`` must leave no namespace, process or mount of it. The root filesystem is
built once per machine (debootstrap, about a minute) and cached; this test starts from the cache.
It takes the lab down at its end, so it gets one of its own (``fresh_lab``) and runs after the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tproxy_nb import lab
from tproxy_nb.lab import netns, rootfs
from tproxy_nb.marks import SHM_DIR, shm_name
from tproxy_nb.remote.host import fingerprint
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check
from tproxy_nb.targets import connect

pytestmark = [pytest.mark.lab, pytest.mark.destructive]
RUN = dict(capture_output=True, text=True, check=True, timeout=600)


def _users(passwd: Path) -> set[str]:
    return {line.split(":", 1)[0] for line in passwd.read_text().splitlines() if line}


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (one whose parent has yet to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _mounted_anywhere(text: str) -> list[str]:
    """Processes on this machine whose mount table mentions ``text`` (any mount namespace)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "mountinfo").read_text():
                found.append(proc.name)
        except OSError:
            pass  # gone meanwhile
    return found


def test_a_full_cycle_on_a_host_of_its_own_then_nothing_is_left(fresh_lab):
    s = Settings().replace(envoy_install="upload")  # this machine's Envoy binary, sent over SFTP
    cli = [sys.executable, "-m", "tproxy_nb.cli", "lab"]
    up = json.loads(subprocess.run([*cli, "up", "--flavour", "rootfs", "--json"], **RUN).stdout)
    status = json.loads(subprocess.run([*cli, "status", "--json"], **RUN).stdout)
    assert up == status and status["healthy"] and status["rootfs"]["healthy"], status
    assert (status["rootfs"]["host"], status["rootfs"]["user"], status["rootfs"]["namespaces"]) == (
        rootfs.ADDR,
        "admin",
        [rootfs.NS],
    )
    host = connect("lab:rootfs")  # the host that is up: connect() leaves a healthy one alone
    assert (
        fingerprint(host.connect().get_transport().get_remote_server_key()) == status["rootfs"]["host_key_fingerprint"]
    )
    there = rootfs.root()
    assert there is not None and (there / "etc/debian_version").read_text().startswith("12.")
    ours = {s.envoy.user, s.service.user}
    shm = {shm_name(b) for b in s.base_ids.values()}
    try:
        assert host.run("hostname").stdout.strip() == rootfs.HOSTNAME
        chain.up(host, s, guard_seconds=None)
        df = check.run_cases(host, s, progress=False)
        assert dict(zip(df["case"], df["outcome"])) == {
            "http allowed": "allowed",
            "http denied": "denied",
            "https allowed": "allowed",
            "https denied": "reset",
        }
        # There, not here: accounts, files, and the Envoys' hot-restart memory in the host's own /dev/shm.
        assert ours <= _users(there / "etc/passwd") and not ours & _users(Path("/etc/passwd"))
        assert (there / s.paths.envoy.lstrip("/")).is_file() and not Path(s.paths.root).exists()
        assert shm <= {p.name for p in (there / "dev/shm").iterdir()}
        assert not [n for n in shm if (Path(SHM_DIR) / n).exists()]
    finally:
        chain.down(host, s)
        host.close()
    assert not ours & _users(there / "etc/passwd") and not (there / s.paths.root.lstrip("/")).exists()
    assert not shm & {p.name for p in (there / "dev/shm").iterdir()}
    outer = rootfs.pid()
    lab.down(s)
    assert lab.leftovers(s) == []
    assert json.loads(subprocess.run([*cli, "status", "--json"], **RUN).stdout)["rootfs"] is None
    assert outer is not None and not _running(outer)
    assert rootfs.NS not in netns.names()
    assert _mounted_anywhere(str(rootfs.run_dir())) == []
    assert (rootfs.cache_path() / rootfs.COMPLETE).is_file()  # the cache stays for the next run
