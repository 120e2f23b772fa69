"""The ENVOY_EGRESS NAT chain on a host, IPv4 and IPv6: read its rules, plan, apply atomically, show, remove.

The rules themselves are rendered by :mod:`tproxy_nb.render.firewall`. Each address family is loaded
with one ``iptables-restore --noflush`` / ``ip6tables-restore --noflush`` (all or nothing per family),
optionally under a rollback guard that the host itself runs (:mod:`tproxy_nb.steps.guard`, in the
spirit of Debian's ``iptables-apply``).

Which families: IPv4 always; IPv6 wherever the host has ip6tables. A host with IPv6 (a global or ULA
address, or a default route) but no ip6tables is refused before anything changes: IPv4-only rules
there would let every IPv6 connection past the allowlist.

Pyinfra style: a *fact* is one read-only command plus a pure parser
(:func:`current_state` = ``iptables-save -t nat -c`` + :func:`~tproxy_nb.render.iptables_save.parse_save`;
:func:`host_families` = which tools exist and whether the host has IPv6, :func:`parse_families`);
the planners (:func:`plan_from_state`, :func:`plan_remove_from_state`, :func:`apply_families`) are
pure and turn wanted + current into a :class:`~tproxy_nb.steps.plan.Plan`; only applying the plan
touches the host.

Example::

    plan = plan_apply(host, settings)   # dry run: print(plan)
    plan.apply(host)                    # or apply(host, settings)
    show(host)                          # rules with packet/byte counters, both families
    remove(host)                        # only our rules and chains
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import StepError
from ..remote.host import Host
from ..render.firewall import CHAIN, FAMILIES, LABELS, hook_rule, tool, wanted_rules
from ..render.iptables_save import (
    Table,
    empty_table,
    normalize_spec,
    parse_backend,
    parse_save,
    save_warnings,
)
from ..settings import Settings
from .guard import run_iptables
from .plan import Change, Plan, Restore

#: Seconds the host waits for a confirmation before restoring the previous rules.
DEFAULT_GUARD_SECONDS = 20


# --------------------------------------------------------------------------- planning (pure)


def _restore_change(summary: str, text: str, guard_seconds: float | None, family: str) -> Change:
    cmd = tool(family, "-restore")
    return Change(f"{summary} (one atomic {cmd} --noflush)", (Restore(text, guard_seconds or None, family),))


def _name(family: str) -> str:
    """``ENVOY_EGRESS (IPv6)``: how plans and notes name the chain of one family."""
    return f"{CHAIN} ({LABELS[family]})"


def _nat(state: dict[str, Table] | Table | None) -> Table:
    if isinstance(state, Table):
        return state
    return (state or {}).get("nat") or empty_table("nat")


def plan_from_state(
    state: dict[str, Table] | Table, settings: Settings, guard_seconds: float | None = None, family: str = "ipv4"
) -> Plan:
    """Compare wanted with current rules of one family; the changes that make them equal (pure).

    state: the nat table (or the dict from :func:`parse_save`) of that family.
    settings: what is wanted (:func:`wanted_rules`).
    guard_seconds: passed to the plan's :class:`~tproxy_nb.steps.plan.Restore`.
    family: ``"ipv4"`` (iptables) or ``"ipv6"`` (ip6tables).

    ENVOY_EGRESS belongs to us: rules someone else added to it are replaced with the wanted ones.
    Our chain is rewritten only when its rules differ (so counters survive otherwise); a right hook
    is kept and every other rule jumping to ENVOY_EGRESS, or carrying our comment outside it, is
    deleted by spec, so applying twice never duplicates anything.

    Example: ``plan_from_state(parse_save(out), Settings()).empty`` -> True when in place.
    """
    nat = _nat(state)
    plan = Plan(f"{tool(family)} {CHAIN}")
    for w in nat.warnings:
        plan.note(w)
    hook, chain_want, name = hook_rule(settings), wanted_rules(settings, family), _name(family)
    keep = next((r for r in nat.chain_rules("OUTPUT") if normalize_spec(r.spec) == normalize_spec(hook.spec)), None)
    stale = [r for r in nat.rules if r.chain != CHAIN and (r.ours or r.target == CHAIN) and r is not keep]
    have = [normalize_spec(r.spec) for r in nat.chain_rules(CHAIN)]
    chain_ok = CHAIN in nat.chains and have == [normalize_spec(w.spec) for w in chain_want]
    if chain_ok and keep is not None and not stale:
        plan.note(f"{name} is in place: {len(chain_want)} rules, one hook in OUTPUT")
        return plan
    what, lines = [], ["*nat"]
    lines += [f"-D {r.chain} {r.spec}" for r in stale]
    if stale:
        what.append(f"delete {len(stale)} stale or duplicate rule(s) ({', '.join(sorted({r.chain for r in stale}))})")
    if not chain_ok:
        lines += [f":{CHAIN} - [0:0]", *(w.line for w in chain_want)]
        what.append(
            f"create {name} with {len(chain_want)} rules"
            if CHAIN not in nat.chains
            else f"rewrite {name} (its {len(have)} rule(s) are not the {len(chain_want)} wanted)"
        )
    else:
        plan.note(f"{name} has the wanted {len(chain_want)} rules (kept with their counters)")
    if keep is None:
        lines.append(hook.line)
        what.append("hook it into OUTPUT for TCP")
    lines.append("COMMIT")
    text = "\n".join(lines) + "\n"
    summary = what[0][0].upper() + "; ".join(what)[1:]
    plan.changes.append(_restore_change(summary, text, guard_seconds, family))
    return plan


def plan_remove_from_state(state: dict[str, Table] | Table, family: str = "ipv4") -> Plan:
    """The changes that delete our rules and chain of one family and nothing else (pure).

    Ours: rules with a ``tproxy-nb:`` comment, rules jumping to ENVOY_EGRESS (they cannot outlive
    it), and the chain itself. Every other rule stays where it is, before or after ours.

    Example: ``plan_remove_from_state(parse_save(out)).empty`` -> True when nothing is there.
    """
    nat = _nat(state)
    plan = Plan(f"{tool(family)} {CHAIN} removal")
    doomed = [r for r in nat.rules if r.chain != CHAIN and (r.ours or r.target == CHAIN)]
    if not doomed and CHAIN not in nat.chains:
        plan.note(f"{_name(family)} is not present; nothing to remove")
        return plan
    lines = ["*nat", *(f"-D {r.chain} {r.spec}" for r in doomed)]
    if CHAIN in nat.chains:
        lines += [f"-F {CHAIN}", f"-X {CHAIN}"]
    lines.append("COMMIT")
    foreign = [r for r in doomed if not r.ours]
    summary = f"Delete {len(doomed)} {LABELS[family]} rule(s) of ours" + (
        f" and chain {CHAIN}" if CHAIN in nat.chains else ""
    )
    if foreign:
        summary += f" (including {len(foreign)} uncommented rule(s) that jump to {CHAIN})"
    kept = len([r for r in nat.rules if r.chain != CHAIN]) - len(doomed)
    plan.note(f"{kept} other {LABELS[family]} nat rule(s) are left as they are")
    plan.changes.append(_restore_change(summary, "\n".join(lines) + "\n", None, family))
    return plan


@dataclass(frozen=True)
class Families:
    """What a host offers for the chain: the iptables tools it has and whether it has IPv6.

    tools: names found (``iptables``, ``iptables-save``, ..., ``ip6tables-restore``).
    ipv6_kernel: the kernel has IPv6 (``/proc/net/if_inet6`` exists).
    ipv6_addresses: global and ULA IPv6 addresses (loopback and link-local excluded).
    ipv6_default_route: an IPv6 default route exists.
    """

    tools: frozenset[str] = frozenset()
    ipv6_kernel: bool = False
    ipv6_addresses: tuple[str, ...] = ()
    ipv6_default_route: bool = False

    @property
    def has_ipv6(self) -> bool:
        """The host can reach IPv6 destinations beyond its own link."""
        return bool(self.ipv6_addresses) or self.ipv6_default_route

    def has_tools(self, family: str) -> bool:
        """All three tools of ``family`` are installed."""
        return all(tool(family, suffix) in self.tools for suffix in ("", "-save", "-restore"))


#: One read-only command: the tools, then the kernel's own IPv6 address and route tables (no iproute2 needed).
FAMILIES_SCRIPT = (
    "for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do "
    'command -v "$n" >/dev/null 2>&1 && echo "tool $n"; done; '
    "if [ -r /proc/net/if_inet6 ]; then echo kernel-ipv6; sed 's/^/addr /' /proc/net/if_inet6; fi; "
    "if [ -r /proc/net/ipv6_route ]; then grep '^00000000000000000000000000000000 00 ' /proc/net/ipv6_route "
    "| sed 's/^/route /'; fi; true"
)

_RTF_REJECT = 0x0200


def parse_families(text: str) -> Families:
    """Parse :data:`FAMILIES_SCRIPT` output (pure).

    ``addr`` lines are ``/proc/net/if_inet6`` (address, ifindex, prefix length, scope, flags, device):
    scope 00 is global, which includes ULA (fc00::/7). ``route`` lines are ``/proc/net/ipv6_route``
    entries for ::/0; the kernel's own unreachable default on ``lo`` (RTF_REJECT) does not count.

    Example: ``parse_families("tool iptables\\nkernel-ipv6\\n").has_ipv6`` -> False.
    """
    tools, addrs, route, kernel = set(), [], False, False
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        f = rest.split()
        if kind == "tool" and f:
            tools.add(f[0])
        elif kind == "kernel-ipv6":
            kernel = True
        elif kind == "addr" and len(f) >= 6 and f[3] == "00" and len(f[0]) == 32:
            addrs.append(":".join(f[0][i : i + 4] for i in range(0, 32, 4)))
        elif kind == "route" and len(f) >= 10:
            try:
                flags = int(f[8], 16)
            except ValueError:
                continue
            route = route or (not flags & _RTF_REJECT and f[9] != "lo")
    return Families(frozenset(tools), kernel, tuple(addrs), route)


def apply_families(fam: Families, host_name: str = "the host") -> tuple[list[str], list[str]]:
    """Which families to apply the chain to, and notes on the rest (pure); refuses an unsafe host.

    IPv4 always (iptables is required); IPv6 wherever ip6tables is installed. A host with IPv6 but
    without ip6tables raises :class:`StepError`: only half of its egress would be intercepted.

    Example: ``apply_families(parse_families(out))`` -> ``(['ipv4', 'ipv6'], [])``.
    """
    if not fam.has_tools("ipv4"):
        missing = [tool("ipv4", x) for x in ("", "-save", "-restore") if tool("ipv4", x) not in fam.tools]
        raise StepError(
            f"{', '.join(missing)} not found on {host_name}: install the `iptables` package on it (Debian/Ubuntu: "
            "sudo apt-get install -y iptables; it brings ip6tables too) and retry. Nothing was changed."
        )
    if not fam.ipv6_kernel:
        return ["ipv4"], [f"{CHAIN} (IPv6) is not needed: the kernel of {host_name} has no IPv6"]
    if fam.has_tools("ipv6"):
        return ["ipv4", "ipv6"], []
    if fam.has_ipv6:
        how = ", ".join(fam.ipv6_addresses[:3]) or "an IPv6 default route"
        raise StepError(
            f"{host_name} has IPv6 ({how}) but no ip6tables, ip6tables-save or ip6tables-restore. Intercepting only "
            "IPv4 would leave it half open: any client that prefers IPv6 (curl does, for a name with an AAAA "
            "record) would reach every site directly, past the allowlist. Install the `iptables` package (it "
            "provides ip6tables; Debian/Ubuntu: sudo apt-get install -y iptables) or turn IPv6 off on the host "
            "(sysctl net.ipv6.conf.all.disable_ipv6=1), then retry. Nothing was changed."
        )
    return ["ipv4"], [f"{CHAIN} (IPv6) is not needed: {host_name} has no IPv6 address or route and no ip6tables"]


# --------------------------------------------------------------------------- facts (read-only commands)


def backend(host: Host) -> str:
    """Which kernel backend the host's ``iptables`` drives: ``"nft"`` or ``"legacy"``.

    Rules loaded through one backend are invisible to the other's tools; the notebook shows this
    so a reader knows which ``iptables-save`` tells the truth.

    Example: ``backend(host)`` -> ``'nft'``.
    """
    r = run_iptables(host, ["iptables", "-V"])
    return parse_backend(r.stdout or r.stderr)


def host_families(host: Host) -> Families:
    """Which iptables tools the host has and whether it has IPv6 (:data:`FAMILIES_SCRIPT`, read-only).

    Example: ``host_families(host).has_ipv6`` -> True on a dual-stack host.
    """
    # Under sudo: the tools live in /usr/sbin, which a login user's PATH often lacks.
    r = host.run(["sh", "-c", FAMILIES_SCRIPT], sudo=True, check=False, timeout=30)
    return parse_families(r.stdout)


def current_state(host: Host, family: str = "ipv4") -> Table:
    """The host's nat table of one family with counters (``iptables-save -t nat -c``), parsed.

    Example: ``current_state(host, "ipv6").chain_rules("ENVOY_EGRESS")``.
    """
    r = run_iptables(host, [tool(family, "-save"), "-t", "nat", "-c"])
    nat = parse_save(r.stdout).get("nat") or empty_table("nat")
    nat.warnings.extend(w for w in save_warnings(r.stderr) if w not in nat.warnings)
    return nat


SHOW_COLUMNS = ["family", "chain", "num", "packets", "bytes", "target", "target_options", "match", "comment"]


def show(host: Host) -> pd.DataFrame:
    """The OUTPUT hook and every ENVOY_EGRESS rule with counters, both families: the notebook's verification table.

    Columns: ``family`` (``ipv4``/``ipv6``), ``chain``, ``num`` (position in its chain, as
    ``iptables -L --line-numbers``), ``packets``, ``bytes`` (ints), ``target``, ``target_options``,
    ``match``, ``comment``. Empty (with these columns) when the chain is not applied; a family whose
    tools are missing has no rows.

    Example: ``show(host).groupby("family").packets.sum()``.
    """
    fam = host_families(host)
    rows = []
    for family in FAMILIES:
        if not fam.has_tools(family) or (family == "ipv6" and not fam.ipv6_kernel):
            continue
        nat = current_state(host, family)
        for chain in ("OUTPUT", CHAIN):
            for num, r in enumerate(nat.chain_rules(chain), 1):
                if chain == "OUTPUT" and r.target != CHAIN:
                    continue
                rows.append(
                    {
                        "family": family,
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
    df = pd.DataFrame(rows, columns=SHOW_COLUMNS)
    return df.astype({"num": "int64", "packets": "int64", "bytes": "int64"})


# --------------------------------------------------------------------------- operations


def plan_apply(host: Host, settings: Settings, guard_seconds: float | None = DEFAULT_GUARD_SECONDS) -> Plan:
    """Read the host's nat tables and plan what brings ENVOY_EGRESS in place in each family (nothing when it is).

    guard_seconds: rollback guard for each family's restore (None: plain atomic restores).

    Raises :class:`StepError` (nothing planned, nothing changed) when iptables is missing, or when the
    host has IPv6 but no ip6tables (:func:`apply_families`).

    Example: ``print(plan_apply(host, settings))``.
    """
    families, notes = apply_families(host_families(host), host.name)
    plan = Plan(f"iptables {CHAIN}")
    for family in families:
        plan.extend(plan_from_state(current_state(host, family), settings, guard_seconds, family))
    for n in notes:
        plan.note(n)
    return plan


def apply(host: Host, settings: Settings, guard_seconds: float | None = DEFAULT_GUARD_SECONDS) -> Plan:
    """Bring ENVOY_EGRESS in place (IPv4, and IPv6 where the host has it), verify from a fresh read; return the plan.

    guard_seconds: seconds the host waits for a new SSH connection to confirm before it restores the
    previous rules (:func:`~tproxy_nb.steps.guard.apply_guarded`, once per family); None or 0 applies
    without the guard (the lab).

    Example: ``apply(host, settings).empty`` -> True on the second run.
    """
    plan = plan_apply(host, settings, guard_seconds)
    plan.apply(host)
    families, _ = apply_families(host_families(host), host.name)
    for family in families:
        after = plan_from_state(current_state(host, family), settings, family=family)
        if not after.empty:
            raise StepError(
                f"After applying, {_name(family)} on {host.name} is still not as wanted; the host now needs:\n{after}"
            )
    return plan


def plan_remove(host: Host) -> Plan:
    """Read the host's nat tables and plan the removal of our rules and chains only (both families).

    A host without iptables (or without ip6tables) cannot hold rules of ours in that family: nothing to
    remove there, and that is not an error (``provision --remove`` still removes the rest).

    Example: ``print(plan_remove(host))``.
    """
    fam = host_families(host)
    plan = Plan(f"iptables {CHAIN} removal")
    for family in FAMILIES:
        if family == "ipv6" and not fam.ipv6_kernel:
            plan.note(f"{_name(family)}: the kernel has no IPv6, so no IPv6 rules of ours can be there")
        elif not fam.has_tools(family):
            plan.note(f"{tool(family)} is not installed on {host.name}: no {LABELS[family]} rules of ours are there")
        else:
            plan.extend(plan_remove_from_state(current_state(host, family), family))
    return plan


def remove(host: Host) -> Plan:
    """Delete our rules and chains (nothing else) in both families; succeed when there is nothing to delete.

    Example: ``remove(host); show(host).empty`` -> True.
    """
    plan = plan_remove(host)
    plan.apply(host)
    left = plan_remove(host)
    if not left.empty:
        raise StepError(f"After removal, rules of ours are still on {host.name}:\n{left}")
    return plan
