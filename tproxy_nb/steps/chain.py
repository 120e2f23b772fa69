"""The whole chain on a host, up or down, every step in order: the one way to do it.

``up`` provisions (accounts, directories, Envoy binary, certificates, configs), loads
the ENVOY_EGRESS rules and starts the three Envoys; ``down`` stops the Envoys and
removes our rules, accounts and files. Both are idempotent and resumable: each step
is planned against the host as it is, so a second run plans nothing and a run cut
short picks up where it stopped. The CLI, the notebooks' catch-up cells, the tests,
the benchmarks and the log-capture script all call these two functions.

Example::

    plans = up(host, settings, guard_seconds=None)   # the lab: no rollback guard needed
    all(p.empty for p in up(host, settings))          # True: nothing left to do
    down(host, settings)
"""

from __future__ import annotations

from pathlib import Path

from ..remote.host import Host
from ..settings import Settings
from . import envoy_proc, files, firewall, provision
from .plan import Plan

#: The stages of :func:`up`, in order; ``through`` stops after the one it names.
STAGES = ("provision", "firewall", "envoys")


def up(
    host: Host,
    settings: Settings,
    *,
    through: str = "envoys",
    certs_dir: str | Path | None = None,
    guard_seconds: float | None = firewall.DEFAULT_GUARD_SECONDS,
) -> list[Plan]:
    """Bring the chain up on ``host``; return every step's plan, as applied.

    host: the target.
    settings: users, ports, paths, allowlist.
    through: the last stage to bring up (``provision``, ``firewall`` or ``envoys``): a notebook
      catching up on what the notebooks before it did stops where it takes over.
    certs_dir: the local certificate directory (default :func:`tproxy_nb.render.certs.default_dir`).
    guard_seconds: rollback guard for the firewall change (None: none, as on the lab whose sshd is local).

    Example: ``[p.step for p in up(host, s, guard_seconds=None)]``.
    """
    if through not in STAGES:
        raise ValueError(f"through must be one of {', '.join(STAGES)}, not {through!r}")
    last = STAGES.index(through)
    plans = list(provision.provision(host, settings, certs_dir=Path(certs_dir) if certs_dir else None))
    if last >= STAGES.index("firewall"):
        plans.append(firewall.apply(host, settings, guard_seconds=guard_seconds))
    if last >= STAGES.index("envoys"):
        plans.append(envoy_proc.plan_start(host, settings).apply(host))
    return plans


def down(host: Host, settings: Settings) -> list[Plan]:
    """Take the chain down on ``host``: stop the Envoys, remove our rules, accounts and files.

    Succeeds when nothing is there. Returns every step's plan, as applied.

    Example: ``all(p.empty for p in down(host, s))`` -> True on the second run.
    """
    plans = []
    for plan in provision.plan_remove(host, settings):
        plans.append(plan.apply(host))
    return plans


#: The settings only the sidecar's config depends on: a running chain switches them by restarting the sidecar.
SIDECAR_SETTINGS = ("tls_deny", "tunnel")


def switch_sidecar(host: Host, settings: Settings, **changes: str) -> tuple[Settings, Plan]:
    """Flip settings of :data:`SIDECAR_SETTINGS` on a running chain: re-render, restart the sidecar only.

    The gateways keep running (their configs do not depend on these settings; igw takes HTTP/1.1 and HTTP/2
    tunnels alike); nothing restarts when the sidecar's config is already right. Returns the new settings and
    the config plan, as applied.

    Example: ``s2, plan = switch_sidecar(host, s, tunnel="http2", tls_deny="sni"); check.run_cases(host, s2)``.
    """
    other = set(changes) - set(SIDECAR_SETTINGS)
    if other:
        raise ValueError(f"only {', '.join(SIDECAR_SETTINGS)} switch with the sidecar alone, not {sorted(other)}")
    new = settings.replace(**changes)
    return new, reload_sidecar(host, new)


def reload_sidecar(host: Host, settings: Settings) -> Plan:
    """Upload the configs ``settings`` render; restart the sidecar when they changed, start it when down.

    For settings that change the sidecar's config alone (the gateways are not restarted). Returns the config
    plan, as applied (empty: nothing restarted).

    Example: ``reload_sidecar(host, s.replace(tunnel="http2")).empty`` -> False the first time.
    """
    plan = files.plan_configs(host, settings).apply(host)
    if not plan.empty:
        envoy_proc.stop(host, settings, ["sidecar"])
    envoy_proc.start(host, settings, ["sidecar"])
    return plan


def switch_tls_deny(host: Host, settings: Settings, mode: str) -> tuple[Settings, Plan]:
    """Flip the sidecar of a running chain to another ``tls_deny`` mode (:func:`switch_sidecar`).

    Example: ``s2, plan = switch_tls_deny(host, s, "sni"); check.run_cases(host, s2)``.
    """
    return switch_sidecar(host, settings, tls_deny=mode)


def switch_tunnel(host: Host, settings: Settings, mode: str) -> tuple[Settings, Plan]:
    """Flip the sidecar of a running chain to another ``tunnel`` (``http1`` or ``http2``) (:func:`switch_sidecar`).

    Example: ``s2, _ = switch_tunnel(host, s, "http2"); envoy_proc.gateway_counts(host, s2)["igw"]``.
    """
    return switch_sidecar(host, settings, tunnel=mode)


def switch_interception(
    host: Host, settings: Settings, mode: str, guard_seconds: float | None = firewall.DEFAULT_GUARD_SECONDS
) -> tuple[Settings, list[Plan]]:
    """Switch a running chain to another ``interception`` (``redirect`` or ``tproxy``); the gateways keep running.

    The sidecar is re-rendered (transparent listeners or not) and restarted (with or without CAP_NET_ADMIN),
    and the firewall rules are swapped; the other mode's rules, ip rule and route are removed. The order
    keeps the window short where a connection finds no listener: the sidecar first when going to tproxy
    (a transparent listener also takes REDIRECTed connections), the rules first when going back.
    Returns the settings with the new mode and the plans, as applied.

    Example: ``s2, plans = switch_interception(host, s, "tproxy", guard_seconds=None); check.run_cases(host, s2)``.
    """
    new = settings.replace(interception=mode)
    if mode == "tproxy":
        plans = [reload_sidecar(host, new), firewall.apply(host, new, guard_seconds=guard_seconds)]
    else:
        plans = [firewall.apply(host, new, guard_seconds=guard_seconds), reload_sidecar(host, new)]
    return new, plans
