"""The lab's own life cycle: repair of a half-dead lab, full cycles of lab up -> chain -> lab down that
leave nothing behind (make bench runs 20), and `lab down` on nothing. Each breaks or removes the lab, so
each gets one of its own (``fresh_lab``) and runs after every test that shares the session's lab."""

import os
import signal

import pytest

from tproxy_nb import lab
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


def test_lab_up_repairs_a_half_dead_lab(fresh_lab):
    # As after a killed run: sshd gone, namespaces still there.
    os.kill(int((lab.STATE_DIR / "sshd.pid").read_text()), signal.SIGKILL)
    assert not lab.status().healthy
    info = lab.up()
    assert info.healthy
    # Repaired, not rebuilt: the same pinned host key (and so the same accounts and files).
    assert info.host_key_fingerprint == fresh_lab.host_key_fingerprint
    with info.host_obj() as h:
        assert h.run("sudo -n true").ok


def test_three_cycles_leave_nothing_behind(fresh_lab):
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


def test_down_leaves_nothing_and_is_idempotent(fresh_lab):
    assert lab.leftovers() != []  # a lab to take down
    assert lab.down() != []
    assert lab.leftovers() == []
    assert lab.down() == []
