"""Files on the target: the directory tree, the certificates Envoy reads and the rendered Envoy configs.

Pure planners take the paths' :class:`~tproxy_nb.steps.facts.FileState` (and, for certificates,
the local certificate state) and plan an :class:`~tproxy_nb.steps.plan.Upload` only where the
content, mode or owner differ. :func:`plan_upload` and :func:`plan_configs` read the host first.

Example::

    print(plan_upload(host, settings)); plan_configs(host, settings).apply(host)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StepError
from ..marks import ROOT_MARK
from ..remote.host import Host
from ..render import certs
from ..render.envoy import config_path, render_all
from ..settings import Settings
from . import facts
from .facts import FileState, LocalFile
from .plan import Change, GenerateCerts, Plan, Run, Upload

#: What the root mark file says.
MARK_TEXT = b"made by tproxy-nb; remove with tproxy-nb provision --remove\n"


def plan_file(
    state: FileState | None,
    remote: str,
    *,
    mode: int,
    owner: str,
    group: str,
    label: str,
    data: bytes | None = None,
    source: LocalFile | None = None,
) -> Change | None:
    """The change that puts ``data`` (or the local ``source``) at ``remote``; None when it is already there.

    state: the remote path now (None: missing).
    remote: absolute path on the target.
    mode, owner, group: the wanted permissions.
    label: how the change is described.
    data / source: the wanted content, in memory or as a local file.

    Example: ``plan_file(None, "/opt/tproxy-nb/etc/igw.yaml", mode=0o640, owner="root", group="tpx-envoy",
    label="igw config", data=b"...")``.
    """
    if data is not None:
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
        upload = Upload(remote, mode, owner, group, sha, size, data=data, label=label)
    elif source is not None:
        upload = Upload(remote, mode, owner, group, source.sha256, source.size, source=source.path, label=label)
    else:
        raise ValueError("plan_file needs data= or source=")
    if state is not None and state.sha256 == upload.sha256:
        if state.has(mode, owner, group):
            return None
        return Change(f"fix the mode or owner of {label}", (upload,))
    return Change(f"{'upload' if state is None else 'update'} {label}", (upload,))


# --------------------------------------------------------------------------- directories


def wanted_dirs(s: Settings) -> list[tuple[str, int, str, str]]:
    """The directory tree under ``paths.root``: (path, mode, owner, group), parents first."""
    p, e = s.paths, s.envoy
    return [
        (p.root, 0o755, "root", "root"),
        (p.bin, 0o755, "root", "root"),
        (p.etc, 0o750, "root", e.group),
        (p.certs, 0o750, e.user, e.group),
        (p.log, 0o750, e.user, e.group),
        (p.run, 0o750, e.user, e.group),
    ]


def dir_paths(s: Settings) -> list[str]:
    """Every path :func:`plan_dirs` needs facts about (the tree and the root mark)."""
    return [d[0] for d in wanted_dirs(s)] + [mark_path(s)]


def mark_path(s: Settings) -> str:
    return f"{s.paths.root}/{ROOT_MARK}"


def check_root_ours(state: dict[str, FileState | None], s: Settings, where: str = "the host") -> bool:
    """Refuse a ``paths.root`` that exists but was not made by us; True when it is ours already.

    Never take over a directory we did not make: removal deletes the whole tree.

    state: facts about at least ``paths.root`` and its mark file.

    Example: ``check_root_ours({"/opt/tproxy-nb": None, "/opt/tproxy-nb/.tproxy-nb": None}, s)`` -> False.
    """
    root = s.paths.root
    marked = state.get(mark_path(s)) is not None
    if not marked and state.get(root) is not None:
        raise StepError(
            f"{root} already exists on {where} and was not made by tproxy-nb (no {ROOT_MARK} in it). "
            "Choose another paths.root in the settings, or remove that directory yourself. "
            "Nothing was changed."
        )
    return marked


def plan_dirs(state: dict[str, FileState | None], s: Settings, where: str = "the host") -> Plan:
    """The directory tree under ``paths.root``, marked as ours (pure).

    state: facts about :func:`dir_paths`.

    Example: ``plan_dirs(facts.files(host, dir_paths(s)), s)``.
    """
    plan = Plan("directories")
    marked = check_root_ours(state, s, where)
    for path, mode, owner, group in wanted_dirs(s):
        st = state.get(path)
        if st is None:
            plan.add(f"create {path}", Run(("install", "-d", "-m", f"{mode:o}", "-o", owner, "-g", group, path)))
        elif not st.has(mode, owner, group):
            plan.add(
                f"fix {path} to {mode:o} {owner}:{group}",
                Run(("chown", f"{owner}:{group}", path)),
                Run(("chmod", f"{mode:o}", path)),
            )
        else:
            plan.note(f"{path} is in place")
    if marked:
        plan.note(f"{s.paths.root} is marked as made by tproxy-nb")
    else:
        change = plan_file(None, mark_path(s), mode=0o644, owner="root", group="root", label="mark", data=MARK_TEXT)
        assert change is not None
        plan.changes.append(Change(f"mark {s.paths.root} as made by tproxy-nb", change.actions))
    return plan


def plan_remove_tree(state: dict[str, FileState | None], s: Settings) -> Plan:
    """Remove ``paths.root`` and everything under it, only when it carries our mark (pure).

    state: facts about :func:`mark_path`.

    Example: ``plan_remove_tree({}, s).notes`` -> ``["/opt/tproxy-nb is not there (or not ours)"]``.
    """
    plan = Plan("files")
    if state.get(mark_path(s)) is not None:
        plan.add(f"remove {s.paths.root}", Run(("rm", "-rf", "--", s.paths.root)))
    else:
        plan.note(f"{s.paths.root} is not there (or not ours)")
    return plan


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class LocalCerts:
    """The local certificate directory: what :func:`~tproxy_nb.render.certs.generate` would (re)make,
    and size/sha256 of every file to upload that it would keep."""

    directory: str
    remake: tuple[str, ...]
    files: dict[str, LocalFile]


def local_certs(local_dir: str | os.PathLike | None = None, settings: Settings | None = None) -> LocalCerts:
    """Read (never write) the local certificate directory (None: :func:`~tproxy_nb.render.certs.default_dir`).

    settings: the denied examples (one deny-page certificate each); None: the defaults.

    Example: ``local_certs("/nonexistent").remake`` -> every certificate.
    """
    directory = Path(local_dir) if local_dir is not None else certs.default_dir()
    remake = certs.to_make(directory, settings)
    files = certs.upload_files(settings)
    kept = {f: facts.local_file(directory / f) for f, _ in files if _stem(f) not in remake}
    return LocalCerts(str(directory), remake, kept)


def _stem(filename: str) -> str:
    return filename.rsplit(".", 1)[0]


def cert_paths(s: Settings) -> list[str]:
    """Where the uploaded certificate files live on the target."""
    return [f"{s.paths.certs}/{f}" for f, _ in certs.upload_files(s)]


def plan_certs(state: dict[str, FileState | None], s: Settings, local: LocalCerts) -> Plan:
    """Generate missing or stale certificates locally (at apply time) and upload what Envoy needs (pure).

    Certificates go 0644, keys 0400, all owned by the envoy user; CA keys never leave this machine.
    A file yet to be generated is uploaded after :class:`GenerateCerts` made it (size and sha256
    are unknown until then).

    state: facts about :func:`cert_paths`.
    local: :func:`local_certs`.

    Example: ``plan_certs({}, s, local_certs("/tmp/new")).changes[0].description`` -> ``"generate ..."``.
    """
    plan = Plan("certificates")
    if local.remake:
        plan.add(
            "generate certificates locally (private keys 0600; the CA keys never leave this machine)",
            GenerateCerts(local.directory, local.remake, s.denied_examples),
        )
    else:
        plan.note(f"local certificates in {local.directory} are valid")
    owner, group = s.envoy.user, s.envoy.group
    for filename, mode in certs.upload_files(s):
        remote = f"{s.paths.certs}/{filename}"
        if _stem(filename) in local.remake:
            upload = Upload(remote, mode, owner, group, source=str(Path(local.directory) / filename), label=filename)
            plan.add(f"upload {filename} once generated", upload)
            continue
        change = plan_file(
            state.get(remote), remote, mode=mode, owner=owner, group=group, label=filename, source=local.files[filename]
        )
        if change is None:
            plan.note(f"{remote} is up to date")
        else:
            plan.changes.append(change)
    return plan


def plan_upload(host: Host, settings: Settings, local_dir: str | os.PathLike | None = None) -> Plan:
    """Read the host and the local certificates; plan generating and uploading (never the CA keys).

    The directory itself (0750, so only the envoy user and group can list it) is :func:`plan_dirs`'s.

    local_dir: the local certificate directory (None: :func:`~tproxy_nb.render.certs.default_dir`).

    Example: ``print(plan_upload(host, s)); plan_upload(host, s).apply(host)``.
    """
    return plan_certs(facts.files(host, cert_paths(settings)), settings, local_certs(local_dir, settings))


# --------------------------------------------------------------------------- configs


def config_paths(s: Settings) -> list[str]:
    return [config_path(s, name) for name in render_all(s)]


def plan_configs_from(state: dict[str, FileState | None], settings: Settings) -> Plan:
    """Upload the rendered configs to ``paths.etc``, root-owned and readable by the envoy group (pure).

    Example: ``plan_configs_from({}, s).changes[0].description`` -> ``"upload sidecar config -> ..."``.
    """
    plan = Plan("envoy configs")
    for name, text in render_all(settings).items():
        remote = config_path(settings, name)
        change = plan_file(
            state.get(remote),
            remote,
            mode=0o640,
            owner="root",
            group=settings.envoy.group,
            label=f"{name} config",
            data=text.encode(),
        )
        if change is None:
            plan.note(f"{remote} is up to date")
        else:
            plan.changes.append(change)
    return plan


def plan_configs(host: Host, settings: Settings) -> Plan:
    """Read the host and plan uploading the rendered configs (:func:`plan_configs_from`).

    The directory is :func:`plan_dirs`'s to make.

    Example: ``print(plan_configs(host, s)); plan_configs(host, s).apply(host)``.
    """
    return plan_configs_from(facts.files(host, config_paths(settings)), settings)
