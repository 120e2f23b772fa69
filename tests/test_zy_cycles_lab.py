"""Runs near the end (it replaces the lab): repair of a half-dead lab, and three full cycles of
lab up -> chain -> lab down that leave nothing behind (make bench runs 20)."""

import os
import signal

import pytest

from tproxy_nb import lab
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check

pytestmark = pytest.mark.lab


def test_lab_up_repairs_a_half_dead_lab(lab_info):
    # As after a killed run: sshd gone, namespaces still there.
    before = lab.status()
    os.kill(int((lab.STATE_DIR / "sshd.pid").read_text()), signal.SIGKILL)
    assert not lab.status().healthy
    info = lab.up()
    assert info.healthy
    # Repaired, not rebuilt: the same pinned host key (and so the same accounts and files).
    assert info.host_key_fingerprint == before.host_key_fingerprint
    with info.host_obj() as h:
        assert h.run("sudo -n true").ok


def test_three_cycles_leave_nothing_behind(lab_info):
    s = Settings()
    for i in range(3):
        host = lab.up().host_obj()
        try:
            chain.up(host, s, guard_seconds=None)
            outcomes = check.run_cases(host, s, progress=False)["outcome"].tolist()
            assert outcomes == ["allowed", "denied", "allowed", "reset"], f"cycle {i}"
        finally:
            host.close()
            lab.down(s)
        assert lab.leftovers(s) == [], f"cycle {i}"
