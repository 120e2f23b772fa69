"""What every notebook opens with: one call from the parameters to a host, settings and a table of facts.

``open`` loads the settings first (a bad file fails before anything connects), names the host
(connected on its first command, its key checked against ``known_hosts``) and the firewall's
rollback guard. The small readers below (environment, admin counters) are what more than one
notebook shows; ``table`` is how the notebooks display a DataFrame: no index column, no NaN.

Example::

    tut = tutorial.open("lab", None, None, None)
    host, settings, GUARD = tut.host, tut.settings, tut.guard_seconds
    table(tut.environment())
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import StepError
from .remote.host import Host
from .settings import Settings, load_settings
from .steps import envoy_proc, firewall
from .targets import connect, is_lab, replay_dir


@dataclass
class Tutorial:
    """The parameters turned into what the notebooks use.

    guard_seconds: the firewall's rollback guard (None on the lab, whose sshd no rule can lock out).
    host: None for a ``replay:DIR`` target (a recorded run has no host).
    """

    target: str
    host: Host | None
    settings: Settings
    guard_seconds: float | None

    def environment(self) -> pd.DataFrame:
        """One row per fact, read now: library version, host, login user, kernel, Debian, iptables, Envoy.

        For a replay: the facts recorded with the run.
        """
        if self.host is None:
            facts = self.recording().facts
            return pd.DataFrame({"fact": list(facts), "value": [str(v) for v in facts.values()]})
        return environment(self.host, self.settings)

    def sites_ca(self) -> str | None:
        """The CA certificate (PEM) that signed the target's sites, to trust alone (``run_cases(cacert=...)``).

        The lab's "public" CA on the lab; None elsewhere: a real host's sites chain to the web PKI, with no
        single CA to name in advance.

        Example: ``check.run_cases(host, s, cacert=tut.sites_ca())``.
        """
        if not is_lab(self.target):
            return None
        from . import lab

        return lab.sites_ca()

    def recording(self):
        """The recorded run to analyse: the ``replay:DIR`` bundle, else the last run's (``bundle.default_dir()``).

        Example: ``tutorial.open("replay:build/report/data").recording().results.head()``.
        """
        from .present import bundle

        return bundle.load(replay_dir(self.target) or bundle.default_dir())


def open(
    target: str | None = "lab",
    key_file: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    settings_file: str | Path | None = None,
) -> Tutorial:
    """Open the tutorial on ``target``: settings, host and rollback guard.

    target: ``"lab"`` (brought up when needed), ``"user@host[:port]"``, an ``~/.ssh/config`` alias or
      ``"replay:DIR"`` (a recorded run's data bundle: no host; its recorded settings unless ``settings_file``
      names others).
    key_file: private key for a non-lab target (None: the config's IdentityFile and ssh-agent's keys).
    known_hosts: file with the pinned host key (default ``~/.ssh/known_hosts``; the lab pins its own).
    settings_file: settings YAML (None: the built-in defaults).

    Example: ``open("admin@203.0.113.10", "~/.ssh/ec2.pem", None, None).guard_seconds`` -> ``20``.
    """
    replay = replay_dir(target)
    if replay is not None:
        from .present import bundle

        recorded = bundle.load(replay)
        settings = load_settings(settings_file) if settings_file else recorded.settings
        return Tutorial(str(target), None, settings, None)
    settings = load_settings(settings_file)
    host = connect(target, key_file, known_hosts=known_hosts)
    guard = None if is_lab(target) else firewall.DEFAULT_GUARD_SECONDS
    return Tutorial(target or "lab", host, settings, guard)


def environment(host: Host, settings: Settings) -> pd.DataFrame:
    """Columns ``fact`` and ``value``, one read-only command per fact; ``?`` where the host did not say.

    Example: ``environment(host, s).set_index("fact").loc["iptables backend", "value"]`` -> ``"nft"``.
    """

    def out(cmd: str) -> str:
        return host.run(cmd, check=False).stdout.strip() or "?"

    try:
        envoy_version = envoy_proc.version(host, settings)
    except StepError:
        envoy_version = "not installed"
    from . import __version__

    facts = {
        "tproxy_nb": __version__,
        "host": f"{host.hostname}:{host.port}",
        "login user": host.user,
        "kernel": out("uname -r"),
        "distribution": out('. /etc/os-release && echo "$PRETTY_NAME"'),
        "Debian version": out("cat /etc/debian_version"),
        "iptables backend": firewall.backend(host),
        "envoy": envoy_version,
    }
    return pd.DataFrame({"fact": list(facts), "value": [str(v) for v in facts.values()]})


def table(df: pd.DataFrame, fill: str = ""):
    """``df`` for display: without its index, missing values (NaN, <NA>, None) shown as ``fill``.

    Example: ``table(pd.DataFrame({"a": [1, None]}))`` shows one column ``a`` with ``1`` and an empty cell.
    """
    shown = df.astype(object).where(df.notna(), fill)
    # Three decimals: seconds to the millisecond, not pandas' six.
    return shown.style.hide(axis="index").format(precision=3)


def plan_summary(plans) -> pd.DataFrame:
    """One row per applied plan: its step, the changes made and what was already right.

    Example: ``plan_summary(chain.up(host, s, guard_seconds=None))["changes made"].sum()`` -> 0 the second time.
    """
    return pd.DataFrame(
        [{"step": p.step, "changes made": len(p.changes), "already right": len(p.notes)} for p in plans],
        columns=["step", "changes made", "already right"],
    )


# --------------------------------------------------------------------------- Envoy's admin counters


def parse_clusters(text: str) -> pd.DataFrame:
    """The admin ``/clusters`` page as one row per upstream host: health and connection/request counts.

    Example: ``parse_clusters(admin(host, s, "sidecar", "/clusters"))[["cluster", "health_flags"]]``.
    """
    rows = [line.split("::") for line in text.splitlines()]
    df = pd.DataFrame([r for r in rows if len(r) == 4], columns=["cluster", "host", "stat", "value"])
    df = df[df["stat"].isin(["health_flags", "cx_active", "cx_total", "rq_total"])]
    wide = df.pivot(index=["cluster", "host"], columns="stat", values="value").reset_index()
    wide.columns.name = None
    return wide


def counter_changes(before: dict[str, int], after: dict[str, int]) -> pd.DataFrame:
    """The counters that moved between two reads: ``counter``, ``before``, ``after``, ``change``.

    A counter missing from ``before`` counts from 0.

    Example: ``counter_changes({"a": 1, "b": 2}, {"a": 4, "b": 2})`` -> one row: a, 1, 4, 3.
    """
    rows = [
        {"counter": k, "before": before.get(k, 0), "after": v, "change": v - before.get(k, 0)}
        for k, v in after.items()
        if v != before.get(k, 0)
    ]
    return pd.DataFrame(rows, columns=["counter", "before", "after", "change"])
