"""The README's step-by-step commands, run as a user would, end with the four outcomes and undo cleanly."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tproxy_nb.cli", *args], capture_output=True, text=True, timeout=600)


def test_readme_flow_then_remove(lab_info, host):
    plan = cli("provision", "--plan")
    assert plan.returncode == 0 and "create user tpx-envoy" in plan.stdout
    assert host.run("getent passwd tpx-envoy", check=False).exit_code == 2  # a plan changes nothing
    for args in (["provision"], ["iptables", "apply"], ["envoy", "start"]):
        p = cli(*args)
        assert p.returncode == 0, (args, p.stderr)
    p = cli("check", "--json")
    assert p.returncode == 0, p.stderr
    got = {r["case"]: (r["outcome"], r["http_code"], r["exit_code"]) for r in json.loads(p.stdout)}
    assert got == {
        "http allowed": ("allowed", 200, 0),
        "http denied": ("denied", 403, 0),
        "https allowed": ("allowed", 200, 0),
        "https denied": ("reset", None, 35),
    }
    assert {r["mode"] for r in json.loads(p.stdout)} == {"reset"}
    p = cli("check", "--json", "--explicit-proxy")
    assert p.returncode == 0, p.stderr
    proxied = {r["case"]: (r["outcome"], r["exit_code"]) for r in json.loads(p.stdout)}
    assert proxied["https denied"] == ("denied", 56) and proxied["https allowed"] == ("allowed", 0)
    t = cli("trace")
    assert t.returncode == 0, t.stderr
    for step in (
        "ClientHello",
        "sends CONNECT",
        "RBAC denied",
        "403 with connection: close",
        "Connection reset by peer",
    ):
        assert step in t.stdout, (step, t.stdout)
    assert t.stdout.index("RBAC denied") < t.stdout.index("Connection reset by peer")
    assert cli("trace", "ftp denied").returncode == 2
    again = cli("provision", "--plan")
    assert again.stdout.count("nothing to change") == 6, again.stdout
    show = cli("iptables", "show")
    assert "ENVOY_EGRESS" in show.stdout and "backend:" in show.stdout
    p = cli("provision", "--remove")
    assert p.returncode == 0, p.stderr
    assert host.run("getent passwd tpx-envoy tpx-svc", check=False).stdout == ""
    assert host.run("test -e /opt/tproxy-nb", check=False).exit_code == 1
    assert "ENVOY_EGRESS" not in host.run("iptables-save -t nat", sudo=True).stdout
    # "[/]" keeps pgrep from matching the shell that runs it.
    assert host.run(["pgrep", "-f", "[/]opt/tproxy-nb/bin/envoy"], check=False).exit_code == 1  # no Envoy left
