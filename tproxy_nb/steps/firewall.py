"""The ENVOY_EGRESS NAT chain on a host: read its rules, plan, apply atomically, show, remove.

The rules themselves are rendered by :mod:`tproxy_nb.render.firewall`. Changes are
loaded with one ``iptables-restore --noflush`` (all or nothing), optionally under a
rollback guard that the host itself runs (:mod:`tproxy_nb.steps.guard`, in the
spirit of Debian's ``iptables-apply``).

Pyinfra style: a *fact* is one read-only command plus a pure parser
(:func:`current_state` = ``iptables-save -t nat -c`` + :func:`~tproxy_nb.render.iptables_save.parse_save`);
the planners (:func:`plan_from_state`, :func:`plan_remove_from_state`) are pure and turn
wanted + current into a :class:`~tproxy_nb.steps.plan.Plan`; only applying the plan touches the host.

Example::

    plan = plan_apply(host, settings)   # dry run: print(plan)
    plan.apply(host)                    # or apply(host, settings)
    show(host)                          # rules with packet/byte counters
    remove(host)                        # only our rules and chain
"""

from __future__ import annotations

import pandas as pd

from ..errors import StepError
from ..remote.host import Host
from ..render.firewall import CHAIN, hook_rule, wanted_rules
from ..render.iptables_save import (
    Table,
    empty_table,
    normalize_spec,
    parse_backend,
    parse_save,
    save_warnings,
)
from ..settings import Settings
from .guard import require_iptables, run_iptables
from .plan import Change, Plan, Restore

#: Seconds the host waits for a confirmation before restoring the previous rules.
DEFAULT_GUARD_SECONDS = 20


# --------------------------------------------------------------------------- planning (pure)


def _restore_change(summary: str, text: str, guard_seconds: float | None) -> Change:
    return Change(f"{summary} (one atomic iptables-restore --noflush)", (Restore(text, guard_seconds or None),))


def _nat(state: dict[str, Table] | Table | None) -> Table:
    if isinstance(state, Table):
        return state
    return (state or {}).get("nat") or empty_table("nat")


def plan_from_state(state: dict[str, Table] | Table, settings: Settings, guard_seconds: float | None = None) -> Plan:
    """Compare wanted with current rules; the changes that make them equal (pure).

    state: the nat table (or the dict from :func:`parse_save`).
    settings: what is wanted (:func:`wanted_rules`).
    guard_seconds: passed to the plan's :class:`~tproxy_nb.steps.plan.Restore`.

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
        what.append(
            f"create {CHAIN} with {len(chain_want)} rules"
            if CHAIN not in nat.chains
            else f"rewrite {CHAIN} (its {len(have)} rule(s) are not the {len(chain_want)} wanted)"
        )
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
            rows.append(
                {
                    "chain": chain,
                    "num": num,
                    "packets": r.packets,
                    "bytes": r.bytes,
                    "target": r.target,
                    "target_options": r.target_options,
                    "match": r.match,
                    "comment": r.comment or "",
                }
            )
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
    previous rules (:func:`~tproxy_nb.steps.guard.apply_guarded`); None or 0 applies without the guard (the lab).

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
