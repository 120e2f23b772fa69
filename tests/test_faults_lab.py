"""Faults: a dead Envoy is reported and restarted; a dropped SSH connection is re-established and steps resume."""

import pytest

from tproxy_nb.steps import chain, envoy_proc, provision

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def running(host, settings):
    list(provision.provision(host, settings))
    envoy_proc.start(host, settings)
    try:
        yield settings
    finally:
        chain.down(host, settings)


def test_a_dead_envoy_is_reported_with_its_log_and_restarts(host, running):
    st = envoy_proc.status(host, running).set_index("name")
    pid = int(st.loc["igw", "pid"])
    host.run(["kill", "-9", str(pid)], sudo=True)
    host.run(
        f"for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1", sudo=True, timeout=30
    )
    st = envoy_proc.status(host, running).set_index("name")
    assert not st.loc["igw", "running"]
    assert st.loc["igw", "log_tail"]  # the last lines of its log, to see why
    assert st.loc["sidecar", "running"]
    envoy_proc.start(host, running)
    st = envoy_proc.status(host, running).set_index("name")
    assert st["running"].all() and st["ready"].all()
    assert int(st.loc["igw", "pid"]) != pid


def test_dropped_connection_mid_provision_is_reestablished(host, running):
    plans = []
    for plan in provision.provision(host, running, dry_run=True):
        plans.append(plan)
        host.connect().get_transport().close()  # the network blips between steps
    assert all(p.empty for p in plans)
    assert host.run("echo alive").stdout.strip() == "alive"
