"""The Envoy binary on the lab: sent compressed, checked by sha256 on the target, not sent twice."""

from __future__ import annotations

import pytest

from tproxy_nb.steps import envoy_binary, facts, provision

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
