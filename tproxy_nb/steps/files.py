"""Files on the target: the certificates Envoy reads and the rendered Envoy configs.

Each planner compares the wanted bytes, mode and owner with the target and plans an
upload only where they differ.

Example::

    print(plan_upload(host, settings)); plan_configs(host, settings).apply(host)
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from ..errors import StepError
from ..remote.host import Host
from ..render.certs import UPLOAD, default_dir
from ..render.envoy import config_path, render_all
from ..settings import Settings
from .plan import Plan


def plan_file(host: Host, remote: str, data: bytes, *, mode: int, owner: str, group: str, label: str) -> Plan | None:
    """A one-change plan that uploads ``data`` to ``remote`` unless it is already there with that mode/owner.

    Returns None when the file is already right (the caller adds a note).

    host: the target.
    remote: absolute path on the target.
    data: the wanted content.
    mode, owner, group: the wanted permissions.
    label: how the change is described.

    Example: ``plan_file(h, "/opt/tproxy-nb/etc/igw.yaml", b"...", mode=0o640, owner="root", group="tpx-envoy", label="igw config")``.
    """
    current = host.stat(remote, sudo=True)
    if current is not None and host.sha256(remote, sudo=True) == hashlib.sha256(data).hexdigest() \
            and current == {"mode": mode, "owner": owner, "group": group}:
        return None
    plan = Plan(label)
    verb = "Upload" if current is None else "Update"
    plan.add(f"{verb} {label} -> {remote} ({mode:o} {owner}:{group})",
             action=lambda h, d=data, r=remote: h.put(io.BytesIO(d), r, mode=mode, owner=owner, group=group))
    return plan


def plan_upload(host: Host, settings: Settings, local_dir: str | os.PathLike | None = None) -> Plan:
    """Plan copying the files Envoy needs to ``settings.paths.certs`` (never the CA keys).

    Certificates go 0644, keys 0400, all owned by the envoy user. The directory itself (0750, so only
    the envoy user and group can list it) is :func:`tproxy_nb.steps.provision.plan_dirs`'s to make.

    host: the target.
    settings: users and paths.
    local_dir: where :func:`generate` wrote the files (None: :func:`default_dir`).

    Example: ``print(plan_upload(host, s)); plan_upload(host, s).apply(host)``.
    """
    directory = Path(local_dir) if local_dir is not None else default_dir()
    missing = [f for f, _ in UPLOAD if not (directory / f).is_file()]
    if missing:
        raise StepError(f"{directory} lacks {', '.join(missing)}. Run tproxy_nb.render.certs.generate({str(directory)!r}, settings) first; nothing was uploaded.")
    owner, group = settings.envoy.user, settings.envoy.group
    plan = Plan("certificates")
    for filename, mode in UPLOAD:
        data = (directory / filename).read_bytes()
        remote = f"{settings.paths.certs}/{filename}"
        sub = plan_file(host, remote, data, mode=mode, owner=owner, group=group, label=filename)
        if sub is None:
            plan.note(f"{remote} is up to date")
        else:
            plan.changes.extend(sub.changes)
    return plan


def plan_configs(host: Host, settings: Settings) -> Plan:
    """Plan uploading the rendered configs to ``paths.etc`` (root-owned, readable by the envoy group).

    The directory is :func:`tproxy_nb.steps.provision.plan_dirs`'s to make.

    Example: ``print(plan_configs(host, s)); plan_configs(host, s).apply(host)``.
    """
    plan = Plan("envoy configs")
    group = settings.envoy.group
    for name, text in render_all(settings).items():
        remote = config_path(settings, name)
        sub = plan_file(host, remote, text.encode(), mode=0o640, owner="root", group=group, label=f"{name} config")
        if sub is None:
            plan.note(f"{remote} is up to date")
        else:
            plan.changes.extend(sub.changes)
    return plan
