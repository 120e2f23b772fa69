"""The ENVOY_EGRESS NAT chain: render it (pure), read the host's rules, plan, apply atomically, show, remove.

Outbound TCP from the host is redirected to the Envoy sidecar with iptables'
``nat`` table::

    OUTPUT ──-p tcp──> ENVOY_EGRESS
                        ├─ not a SYN ─────────────> RETURN (connections open before conntrack began)
                        ├─ envoy uid / envoy gid ──> RETURN (Envoy's own traffic leaves directly)
                        ├─ -o lo / -d 127.0.0.0/8 ──> RETURN (local stays local)
                        ├─ --dport 80 ────────────> REDIRECT :12003 (sidecar, plain HTTP)
                        └─ any other port ────────> REDIRECT :12000 (sidecar, TLS)

Every rule carries ``-m comment --comment "tproxy-nb: <why>"`` so that the
rules are recognisable as ours in ``iptables-save`` and removal touches nothing
else. Changes are loaded with one ``iptables-restore --noflush`` (all or
nothing), optionally under a rollback guard that the host itself runs
(:func:`apply_guarded`, in the spirit of Debian's ``iptables-apply``).

Layers, pyinfra style: a *fact* is one read-only command plus a pure parser
(:func:`current_state` = ``iptables-save -t nat -c`` + :func:`parse_save`); the
planner (:func:`plan_from_state`) is pure and turns wanted + current into a
:class:`~tproxy_nb.steps.Plan`; only the plan's action touches the host. The pure
model of ``iptables-save`` text lives in :mod:`tproxy_nb.iptables_save`, the restore
and its rollback guard in :mod:`tproxy_nb.guard`; their names are re-exported here.

Example::

    plan = plan_apply(host, settings)   # dry run: print(plan)
    plan.apply(host)                    # or apply(host, settings)
    show(host)                          # rules with packet/byte counters
    remove(host)                        # only our rules and chain
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .errors import StepError
from .guard import (GUARD_DIR, GuardFiles, GuardOutcome, run_iptables, apply_guarded, confirm_script, reconnect,
                    require_iptables, restore, rollback_text, timer_script)
from .hosts import Host
from .iptables_save import (BUILTIN_CHAINS, COMMENT_PREFIX, Chain, Rule, Table, changed_tables, empty_table,
                            normalize_spec, parse_backend, parse_save, ruleset_diff, save_warnings, simulate_restore,
                            split_spec, strip_counters)
from .settings import Settings
from .steps import Change, Plan

#: Our chain in the nat table.
CHAIN = "ENVOY_EGRESS"
#: Seconds the host waits for a confirmation before restoring the previous rules.
DEFAULT_GUARD_SECONDS = 20


# --------------------------------------------------------------------------- wanted rules (pure)


@dataclass(frozen=True)
class WantedRule:
    """One rule we want: its chain, its spec (as ``iptables-save`` prints it) and why it exists."""

    chain: str
    spec: str
    why: str

    @property
    def line(self) -> str:
        return f"-A {self.chain} {self.spec}"


def _spec(match: str, comment: str, target: str) -> str:
    # Written in the canonical order iptables-save prints (-o/-d/-p first, then matches,
    # comment, target), so the rendered text and the host's own listing read the same.
    if '"' in comment or "'" in comment:
        raise ValueError(f"comment must not contain quotes: {comment!r}")
    parts = [match, f'-m comment --comment "{COMMENT_PREFIX} {comment}"', f"-j {target}"]
    return " ".join(p for p in parts if p)


def hook_rule(settings: Settings | None = None) -> WantedRule:
    """The one OUTPUT rule that sends outbound TCP into ENVOY_EGRESS.

    Example: ``hook_rule().line`` -> ``'-A OUTPUT -p tcp -m comment --comment "tproxy-nb: ..." -j ENVOY_EGRESS'``.
    """
    # OUTPUT, not PREROUTING: packets that local processes send never traverse PREROUTING
    # (it sees only packets arriving on an interface). Only TCP: Envoy proxies TCP; DNS (UDP) goes out as is.
    return WantedRule("OUTPUT", _spec("-p tcp", f"outbound TCP from this host goes through {CHAIN}", CHAIN),
                      "Locally generated packets traverse nat OUTPUT and never PREROUTING (that hook sees only packets "
                      "arriving from outside), so the hook lives in OUTPUT. Only TCP is sent in: Envoy proxies TCP; "
                      "UDP such as DNS leaves unchanged.")


def wanted_rules(settings: Settings) -> list[WantedRule]:
    """The rules of ENVOY_EGRESS, in order (the hook is :func:`hook_rule`).

    settings: uses ``envoy.uid``, ``envoy.gid``, ``ports.http_redirect``, ``ports.tls_redirect``.

    Example: ``[r.spec for r in wanted_rules(Settings())][1]`` ->
    ``'-m owner --uid-owner 2101 -m comment --comment "tproxy-nb: envoy uid bypasses the proxy" -j RETURN'``.
    """
    e, p = settings.envoy, settings.ports
    return [
        # nat sees only the first packet conntrack tracks of each connection: a SYN for any connection a local
        # process opens. A first packet without SYN is a connection already open when conntrack started (on a
        # host with no nat rules before, the SSH session applying these rules): redirecting it would cut it.
        WantedRule(CHAIN, _spec("-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN",
                                "only new connections (SYN) are redirected", "RETURN"),
                   "nat sees only the first packet of each connection that conntrack tracks; for a connection this "
                   "host opens, that is its SYN. A first packet without SYN belongs to a connection that was open "
                   "before conntrack started tracking (the SSH session applying these rules, on a host that had no "
                   "nat rules): redirecting it would cut that session, so it is left alone."),
        # RETURN the envoy uid first, or Envoy's own upstream connections are redirected back into Envoy: a loop.
        WantedRule(CHAIN, _spec(f"-m owner --uid-owner {e.uid}", "envoy uid bypasses the proxy", "RETURN"),
                   f"Envoy's own upstream connections (uid {e.uid}, {e.user}) must leave directly; without this RETURN "
                   "they would be redirected back into Envoy and loop."),
        WantedRule(CHAIN, _spec(f"-m owner --gid-owner {e.gid}", "envoy gid bypasses the proxy", "RETURN"),
                   f"Processes running with the envoy group (gid {e.gid}, {e.group}) bypass too: a second guard against "
                   "loops for helpers that keep the group but not the uid."),
        # Routing picks lo for every local address (127/8 and the host's own IPs): local services stay local.
        WantedRule(CHAIN, _spec("-o lo", "loopback traffic stays local", "RETURN"),
                   "Connections to the host's own addresses route via lo (local services, Envoy admin, the gateways); "
                   "sending them through the egress proxy would be wrong and could loop."),
        WantedRule(CHAIN, _spec("-d 127.0.0.0/8", "127.0.0.0/8 stays local", "RETURN"),
                   "Loopback destinations never leave the host, whatever the route says; they are reached directly."),
        WantedRule(CHAIN, _spec("-p tcp -m tcp --dport 80", "port 80 goes to the sidecar HTTP listener",
                                f"REDIRECT --to-ports {p.http_redirect}"),
                   f"Plain HTTP goes to the sidecar's HTTP listener on {p.http_redirect}; REDIRECT keeps the original "
                   "destination readable for Envoy (SO_ORIGINAL_DST) and Envoy routes on the Host header."),
        WantedRule(CHAIN, _spec("-p tcp", "every other TCP port goes to the sidecar TLS listener",
                                f"REDIRECT --to-ports {p.tls_redirect}"),
                   f"Every other TCP port (443 above all) goes to the sidecar's TLS listener on {p.tls_redirect}, "
                   "which reads the SNI and the original destination."),
    ]


def render_rules(settings: Settings) -> str:
    """The complete ``iptables-restore`` text (nat table) for ENVOY_EGRESS and its OUTPUT hook.

    Load it with ``iptables-restore --noflush`` on a host that has none of it yet; on a host
    that may have it, use :func:`plan_apply`, which never duplicates the hook.

    settings: see :func:`wanted_rules`.

    Example: ``print(render_rules(Settings()))``.
    """
    lines = [
        "# tproxy-nb: ENVOY_EGRESS, the transparent-proxy redirect (load with iptables-restore --noflush)",
        "*nat",
        f":{CHAIN} - [0:0]",
        hook_rule(settings).line,
        *(r.line for r in wanted_rules(settings)),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def explain_rules(settings: Settings) -> pd.DataFrame:
    """One row per rule (hook first): ``chain``, ``rule`` (the -A line), ``why`` (a sentence).

    Example: ``explain_rules(Settings()).loc[1, "why"]``.
    """
    rules = [hook_rule(settings), *wanted_rules(settings)]
    return pd.DataFrame({"chain": [r.chain for r in rules], "rule": [r.line for r in rules], "why": [r.why for r in rules]})



# --------------------------------------------------------------------------- planning (pure)


@dataclass
class RestoreAction:
    """A plan's action: feed ``text`` to ``iptables-restore --noflush`` on the host (optionally guarded).

    text: the restore input (shown in the plan).
    guard_seconds: None/0 for a plain atomic restore; else :func:`apply_guarded` with that guard.
    """

    text: str
    guard_seconds: float | None = None

    def __call__(self, host: Host) -> None:
        if self.guard_seconds:
            apply_guarded(host, self.text, guard_seconds=self.guard_seconds)
        else:
            restore(host, self.text)


def _restore_change(summary: str, text: str, guard_seconds: float | None) -> Change:
    guard = f", guarded: the host restores the old rules after {guard_seconds:g} s unless a new SSH connection confirms" if guard_seconds else ""
    body = "\n".join("      | " + line for line in text.rstrip("\n").splitlines())
    return Change(f"{summary} (one atomic iptables-restore --noflush{guard}):\n{body}", [],
                  action=RestoreAction(text, guard_seconds))


def _nat(state: dict[str, Table] | Table | None) -> Table:
    if isinstance(state, Table):
        return state
    return (state or {}).get("nat") or empty_table("nat")


def plan_from_state(state: dict[str, Table] | Table, settings: Settings, guard_seconds: float | None = None) -> Plan:
    """Compare wanted with current rules; the changes that make them equal (pure).

    state: the nat table (or the dict from :func:`parse_save`).
    settings: what is wanted (:func:`wanted_rules`).
    guard_seconds: passed to the plan's :class:`RestoreAction`.

    ENVOY_EGRESS belongs to us: rules someone else added to it are replaced with the wanted ones.
    Our chain is rewritten only when its rules differ (so counters survive otherwise); a right hook
    is kept and every other rule jumping to ENVOY_EGRESS, or carrying our comment outside it, is
    deleted by spec, so applying twice never duplicates anything.

    Example: ``plan_from_state(parse_save(out), Settings()).empty`` -> True when in place.
    """
    nat = _nat(state)
    plan = Plan(f"iptables {CHAIN}")
    for w in nat.warnings:
        plan.note(w)
    hook, chain_want = hook_rule(settings), wanted_rules(settings)
    keep = next((r for r in nat.chain_rules("OUTPUT") if normalize_spec(r.spec) == normalize_spec(hook.spec)), None)
    stale = [r for r in nat.rules if r.chain != CHAIN and (r.ours or r.target == CHAIN) and r is not keep]
    have = [normalize_spec(r.spec) for r in nat.chain_rules(CHAIN)]
    chain_ok = CHAIN in nat.chains and have == [normalize_spec(w.spec) for w in chain_want]
    if chain_ok and keep is not None and not stale:
        plan.note(f"{CHAIN} is in place: {len(chain_want)} rules, one hook in OUTPUT")
        return plan
    what, lines = [], ["*nat"]
    lines += [f"-D {r.chain} {r.spec}" for r in stale]
    if stale:
        what.append(f"delete {len(stale)} stale or duplicate rule(s) ({', '.join(sorted({r.chain for r in stale}))})")
    if not chain_ok:
        lines += [f":{CHAIN} - [0:0]", *(w.line for w in chain_want)]
        what.append(f"create {CHAIN} with {len(chain_want)} rules" if CHAIN not in nat.chains
                    else f"rewrite {CHAIN} (its {len(have)} rule(s) are not the {len(chain_want)} wanted)")
    else:
        plan.note(f"{CHAIN} has the wanted {len(chain_want)} rules (kept with their counters)")
    if keep is None:
        lines.append(hook.line)
        what.append("hook it into OUTPUT for TCP")
    lines.append("COMMIT")
    text = "\n".join(lines) + "\n"
    summary = what[0][0].upper() + "; ".join(what)[1:]
    plan.changes.append(_restore_change(summary, text, guard_seconds))
    return plan


def plan_remove_from_state(state: dict[str, Table] | Table) -> Plan:
    """The changes that delete our rules and chain and nothing else (pure).

    Ours: rules with a ``tproxy-nb:`` comment, rules jumping to ENVOY_EGRESS (they cannot outlive
    it), and the chain itself. Every other rule stays where it is, before or after ours.

    Example: ``plan_remove_from_state(parse_save(out)).empty`` -> True when nothing is there.
    """
    nat = _nat(state)
    plan = Plan(f"iptables {CHAIN} removal")
    doomed = [r for r in nat.rules if r.chain != CHAIN and (r.ours or r.target == CHAIN)]
    if not doomed and CHAIN not in nat.chains:
        plan.note(f"{CHAIN} is not present; nothing to remove")
        return plan
    lines = ["*nat", *(f"-D {r.chain} {r.spec}" for r in doomed)]
    if CHAIN in nat.chains:
        lines += [f"-F {CHAIN}", f"-X {CHAIN}"]
    lines.append("COMMIT")
    foreign = [r for r in doomed if not r.ours]
    summary = f"Delete {len(doomed)} rule(s) of ours" + (f" and chain {CHAIN}" if CHAIN in nat.chains else "")
    if foreign:
        summary += f" (including {len(foreign)} uncommented rule(s) that jump to {CHAIN})"
    kept = len([r for r in nat.rules if r.chain != CHAIN]) - len(doomed)
    plan.note(f"{kept} other nat rule(s) are left as they are")
    plan.changes.append(_restore_change(summary, "\n".join(lines) + "\n", None))
    return plan



# --------------------------------------------------------------------------- facts (read-only commands)


def backend(host: Host) -> str:
    """Which kernel backend the host's ``iptables`` drives: ``"nft"`` or ``"legacy"``.

    Rules loaded through one backend are invisible to the other's tools; the notebook shows this
    so a reader knows which ``iptables-save`` tells the truth.

    Example: ``backend(host)`` -> ``'nft'``.
    """
    r = run_iptables(host, ["iptables", "-V"])
    return parse_backend(r.stdout or r.stderr)


def current_state(host: Host) -> Table:
    """The host's nat table with counters (``iptables-save -t nat -c``), parsed.

    Example: ``current_state(host).chain_rules("ENVOY_EGRESS")``.
    """
    r = run_iptables(host, ["iptables-save", "-t", "nat", "-c"])
    nat = parse_save(r.stdout).get("nat") or empty_table("nat")
    nat.warnings.extend(w for w in save_warnings(r.stderr) if w not in nat.warnings)
    return nat


def show(host: Host) -> pd.DataFrame:
    """The OUTPUT hook and every ENVOY_EGRESS rule with counters, as the notebook's verification table.

    Columns: ``chain``, ``num`` (position in its chain, as ``iptables -L --line-numbers``),
    ``packets``, ``bytes`` (ints), ``target``, ``target_options``, ``match``, ``comment``.
    Empty (with these columns) when the chain is not applied.

    Example: ``show(host)[["chain", "target", "packets"]]``.
    """
    nat = current_state(host)
    rows = []
    for chain in ("OUTPUT", CHAIN):
        for num, r in enumerate(nat.chain_rules(chain), 1):
            if chain == "OUTPUT" and r.target != CHAIN:
                continue
            rows.append({"chain": chain, "num": num, "packets": r.packets, "bytes": r.bytes, "target": r.target,
                         "target_options": r.target_options, "match": r.match, "comment": r.comment or ""})
    cols = ["chain", "num", "packets", "bytes", "target", "target_options", "match", "comment"]
    df = pd.DataFrame(rows, columns=cols)
    return df.astype({"num": "int64", "packets": "int64", "bytes": "int64"})


# --------------------------------------------------------------------------- operations


def plan_apply(host: Host, settings: Settings, guard_seconds: float | None = DEFAULT_GUARD_SECONDS) -> Plan:
    """Read the host's nat table and plan what brings ENVOY_EGRESS in place (nothing when it is).

    guard_seconds: rollback guard for the plan's restore (None: plain atomic restore).

    Example: ``print(plan_apply(host, settings))``.
    """
    require_iptables(host)
    return plan_from_state(current_state(host), settings, guard_seconds)


def apply(host: Host, settings: Settings, guard_seconds: float | None = DEFAULT_GUARD_SECONDS) -> Plan:
    """Bring ENVOY_EGRESS in place and verify it from a fresh read; return the plan that was applied.

    guard_seconds: seconds the host waits for a new SSH connection to confirm before it restores the
    previous rules (:func:`apply_guarded`); None or 0 applies without the guard (the lab).

    Example: ``apply(host, settings).empty`` -> True on the second run.
    """
    plan = plan_apply(host, settings, guard_seconds)
    plan.apply(host)
    after = plan_from_state(current_state(host), settings)
    if not after.empty:
        raise StepError(f"After applying, {CHAIN} on {host.name} is still not as wanted; the host now needs:\n{after}")
    return plan


def plan_remove(host: Host) -> Plan:
    """Read the host's nat table and plan the removal of our rules and chain only.

    Example: ``print(plan_remove(host))``.
    """
    require_iptables(host)
    return plan_remove_from_state(current_state(host))


def remove(host: Host) -> Plan:
    """Delete our rules and chain (nothing else); succeed when there is nothing to delete.

    Example: ``remove(host); show(host).empty`` -> True.
    """
    plan = plan_remove(host)
    plan.apply(host)
    left = plan_remove_from_state(current_state(host))
    if not left.empty:
        raise StepError(f"After removal, rules of ours are still on {host.name}:\n{left}")
    return plan


__all__ = [
    "CHAIN", "COMMENT_PREFIX", "DEFAULT_GUARD_SECONDS", "Chain", "GuardOutcome", "Rule", "Table", "WantedRule",
    "apply", "apply_guarded", "backend", "current_state", "explain_rules", "hook_rule", "normalize_spec",
    "parse_backend", "parse_save", "plan_apply", "plan_from_state", "plan_remove", "plan_remove_from_state",
    "changed_tables", "reconnect", "remove", "render_rules", "restore", "rollback_text", "ruleset_diff", "save_warnings", "show",
    "simulate_restore", "split_spec", "strip_counters", "wanted_rules",
    # re-exported for callers that reach them through this module (tests, notebooks)
    "BUILTIN_CHAINS", "GUARD_DIR", "GuardFiles", "confirm_script", "empty_table", "require_iptables", "timer_script",
]
