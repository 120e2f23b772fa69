"""The interception rules on a host, IPv4 and IPv6: read them, plan, apply atomically, show, remove.

``interception: redirect`` is the ENVOY_EGRESS NAT chain; ``tproxy`` the mangle chains ENVOY_MARK and
ENVOY_TPROXY with an ip rule and a local route per family. A plan brings the host to the settings' mode
and removes what the other mode left; removal takes every rule, chain, ip rule and route of ours and
nothing else. The rules themselves are rendered by :mod:`tproxy_nb.render.firewall`. Each address family
is loaded with one ``iptables-restore --noflush`` / ``ip6tables-restore --noflush`` (all or nothing per
family, nat and mangle together), optionally under a rollback guard that the host itself runs
(:mod:`tproxy_nb.steps.guard`, in the spirit of Debian's ``iptables-apply``).

Which families: IPv4 always; IPv6 wherever the host has ip6tables. A host with IPv6 (a global or ULA
address, or a default route) but no ip6tables is refused before anything changes: IPv4-only rules
there would let every IPv6 connection past the allowlist.

Pyinfra style: a *fact* is one read-only command plus a pure parser
(:func:`current_tables` = ``iptables-save -c`` + :func:`~tproxy_nb.render.iptables_save.parse_save`;
:func:`tproxy_nb.steps.facts.routing` = ``ip -j rule`` and ``ip -j route show table 400``;
:func:`host_families` = which tools exist and whether the host has IPv6, :func:`parse_families`);
the planners (:func:`plan_from_state`, :func:`plan_remove_from_state`, :func:`apply_families`) are
pure and turn wanted + current into a :class:`~tproxy_nb.steps.plan.Plan`; only applying the plan
touches the host.

Example::

    plan = plan_apply(host, settings)   # dry run: print(plan)
    plan.apply(host)                    # or apply(host, settings)
    show(host)                          # rules with packet/byte counters, both families and tables
    show_routing(host)                  # our ip rules and routes (tproxy)
    remove(host)                        # only our rules, chains, ip rules and routes
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import StepError
from ..marks import ROUTE_PROTO
from ..remote.host import Host
from ..render.firewall import (
    CHAIN,
    FAMILIES,
    LABELS,
    OUR_CHAINS,
    ROUTE_TABLE,
    ChainSpec,
    RouteEntry,
    ip_entries,
    tool,
    wanted_chains,
)
from ..render.iptables_save import (
    Table,
    empty_table,
    normalize_spec,
    parse_backend,
    parse_save,
    save_warnings,
)
from ..settings import Settings
from .facts import Routing, routing
from .guard import run_iptables
from .plan import Change, Plan, Restore, Run

#: Seconds the host waits for a confirmation before restoring the previous rules.
DEFAULT_GUARD_SECONDS = 20


# --------------------------------------------------------------------------- planning (pure)


def _restore_change(summary: str, text: str, guard_seconds: float | None, family: str) -> Change:
    cmd = tool(family, "-restore")
    return Change(f"{summary} (one atomic {cmd} --noflush)", (Restore(text, guard_seconds or None, family),))


def _name(family: str) -> str:
    """``ENVOY_EGRESS (IPv6)``: how plans and notes name the chain of one family."""
    return f"{CHAIN} ({LABELS[family]})"


def _tables(state: dict[str, Table] | Table | None) -> dict[str, Table]:
    """Our tables from a state: a dict from :func:`parse_save`, or a lone Table (the nat table, as before TPROXY)."""
    if isinstance(state, Table):
        state = {state.name: state}
    return {t: (state or {}).get(t) or empty_table(t) for t in OUR_CHAINS}


def _apply_lines(table: Table, specs: list[ChainSpec]) -> tuple[list[str], list[str], list[str]]:
    """What brings ``specs`` (chains of one table) in place: restore lines, summary parts, notes (pure).

    Our chains are rewritten only when their rules differ (so counters survive otherwise); a right hook
    is kept and every other rule jumping to a chain of ours, or carrying our comment outside them, is
    deleted by spec; a chain of ours that is not wanted (the other interception's) is flushed and deleted.
    """
    ours = OUR_CHAINS[table.name]
    keep = {
        c.name: next(
            (r for r in table.chain_rules(c.hook.chain) if normalize_spec(r.spec) == normalize_spec(c.hook.spec)), None
        )
        for c in specs
    }
    stale = [
        r
        for r in table.rules
        if r.chain not in ours and (r.ours or r.target in ours) and not any(r is k for k in keep.values())
    ]
    unwanted = [n for n in ours if n in table.chains and n not in keep]
    ok = {
        c.name: c.name in table.chains
        and [normalize_spec(r.spec) for r in table.chain_rules(c.name)] == [normalize_spec(w.spec) for w in c.rules]
        for c in specs
    }
    if all(ok.values()) and all(keep.values()) and not stale and not unwanted:
        return [], [], [f"{c.label} is in place: {len(c.rules)} rules, one hook in {c.hook.chain}" for c in specs]
    what, notes = [], []
    lines = [f"-D {r.chain} {r.spec}" for r in stale]
    if stale:
        what.append(f"delete {len(stale)} stale or duplicate rule(s) ({', '.join(sorted({r.chain for r in stale}))})")
    for n in unwanted:
        lines += [f"-F {n}", f"-X {n}"]
    if unwanted:
        what.append(f"delete chain(s) {', '.join(unwanted)} of the other interception")
    for c in specs:
        if not ok[c.name]:
            have = len(table.chain_rules(c.name))
            lines += [f":{c.name} - [0:0]", *(w.line for w in c.rules)]
            what.append(
                f"create {c.label} with {len(c.rules)} rules"
                if c.name not in table.chains
                else f"rewrite {c.label} (its {have} rule(s) are not the {len(c.rules)} wanted)"
            )
        else:
            notes.append(f"{c.label} has the wanted {len(c.rules)} rules (kept with their counters)")
    for c in specs:
        if keep[c.name] is None:
            lines.append(c.hook.line)
            what.append(f"hook {'it' if len(specs) == 1 else c.name} into {c.hook.chain} for TCP")
    return lines, what, notes


def _remove_lines(table: Table, family: str) -> tuple[list[str], str, list[str]]:
    """What deletes every rule and chain of ours in one table and nothing else: lines, summary, notes (pure).

    Ours: rules with a ``tproxy-nb:`` comment, rules jumping to a chain of ours (they cannot outlive it),
    and the chains themselves.
    """
    ours = OUR_CHAINS[table.name]
    doomed = [r for r in table.rules if r.chain not in ours and (r.ours or r.target in ours)]
    chains = [n for n in ours if n in table.chains]
    if not doomed and not chains:
        return [], "", []
    lines = [f"-D {r.chain} {r.spec}" for r in doomed]
    for n in chains:
        lines += [f"-F {n}", f"-X {n}"]
    foreign = [r for r in doomed if not r.ours]
    kind = "" if table.name == "nat" else f" {table.name}"
    summary = f"Delete {len(doomed)} {LABELS[family]}{kind} rule(s) of ours" + (
        f" and chain{'s' if len(chains) > 1 else ''} {', '.join(chains)}" if chains else ""
    )
    if foreign:
        summary += f" (including {len(foreign)} uncommented rule(s) that jump to {', '.join(ours)})"
    kept = len([r for r in table.rules if r.chain not in ours]) - len(doomed)
    return lines, summary, [f"{kept} other {LABELS[family]} {table.name} rule(s) are left as they are"]


def _routing_changes(routing: Routing, want: list[RouteEntry], family: str) -> tuple[list[Run], list[Run], list[str]]:
    """The ip commands that make our rules and routes of ``family`` equal ``want``: (adds, deletes, notes) (pure).

    Ours carry ``proto`` :data:`~tproxy_nb.marks.ROUTE_PROTO`. A route in our table that is not ours
    (someone else uses table :data:`ROUTE_TABLE`) is refused: adding next to it would fail, taking it over
    would make removal delete it.
    """
    proto = str(ROUTE_PROTO)
    have = [e for kind in ("rule", "route") for e in routing.of(family, kind) if e.proto == proto]
    foreign = [e for e in routing.of(family, "route") if e.proto != proto]
    if want and foreign:
        raise StepError(
            f"Routing table {ROUTE_TABLE} ({LABELS[family]}) already holds routes that are not ours "
            f"({'; '.join(' '.join(e.fields) for e in foreign[:3])}): interception: tproxy needs that table for "
            "its own route. Remove those routes or use interception: redirect. Nothing was changed."
        )
    adds = [Run(tuple(w.add)) for w in want if not any((e.kind, e.fields) == (w.kind, w.fields) for e in have)]
    stale = [e for e in have if not any((e.kind, e.fields) == (w.kind, w.fields) for w in want)]
    deletes = [Run(tuple(RouteEntry(e.kind, family, e.fields).delete)) for e in stale]
    notes = [f"ip rule and route of table {ROUTE_TABLE} ({LABELS[family]}) are in place"] if want and not adds else []
    return adds, deletes, notes


def plan_from_state(
    state: dict[str, Table] | Table,
    settings: Settings,
    guard_seconds: float | None = None,
    family: str = "ipv4",
    routing: Routing | None = None,
) -> Plan:
    """Compare wanted with current rules of one family; the changes that make them equal (pure).

    state: the nat and mangle tables (the dict from :func:`parse_save`; a lone Table is the nat table).
    settings: what is wanted: the chains of ``settings.interception`` (:func:`wanted_chains`).
    guard_seconds: passed to the plan's :class:`~tproxy_nb.steps.plan.Restore`.
    family: ``"ipv4"`` (iptables) or ``"ipv6"`` (ip6tables).
    routing: the host's ip rules and routes (:func:`tproxy_nb.steps.facts.routing`); None leaves them out.

    The chains of ours belong to us: rules someone else added to them are replaced with the wanted ones.
    A chain is rewritten only when its rules differ (so counters survive otherwise); a right hook is kept
    and every other rule jumping to a chain of ours, or carrying our comment outside them, is deleted by
    spec, so applying twice never duplicates anything. The other interception's rules, ip rule and route
    are removed: switching modes leaves nothing stale. Both tables change in one restore; the ip rule and
    route are added before it (harmless until packets are marked) and deleted after it.

    Example: ``plan_from_state(parse_save(out), Settings()).empty`` -> True when in place.
    """
    tables, chains = _tables(state), wanted_chains(settings, family)
    plan = Plan(f"{tool(family)} {', '.join(c.name for c in chains)}")
    for w in dict.fromkeys(w for t in tables.values() for w in t.warnings):
        plan.note(w)
    text, what = [], []
    for name, table in tables.items():
        specs = [c for c in chains if c.table == name]
        if specs:
            lines, parts, notes = _apply_lines(table, specs)
        else:
            lines, summary, notes = _remove_lines(table, family)
            parts = [summary[0].lower() + summary[1:] + f" (interception is {settings.interception})"] if lines else []
            notes = []
        text += [f"*{name}", *lines, "COMMIT"] if lines else []
        what += parts
        for n in notes:
            plan.note(n)
    want = ip_entries(family) if settings.interception == "tproxy" else []
    if routing is not None and want and not routing.ip:
        raise StepError(
            "interception: tproxy needs the ip command (iproute2) on the host for its rule and route: install "
            "it (Debian/Ubuntu: sudo apt-get install -y iproute2) and retry. Nothing was changed."
        )
    adds, deletes, route_notes = _routing_changes(routing, want, family) if routing is not None else ([], [], [])
    if adds:
        plan.add(f"Add the ip rule and route that deliver marked packets locally ({LABELS[family]})", *adds)
    if text:
        summary = what[0][0].upper() + "; ".join(what)[1:]
        plan.changes.append(_restore_change(summary, "\n".join(text) + "\n", guard_seconds, family))
    if deletes:
        plan.add(f"Delete {len(deletes)} ip rule(s)/route(s) of ours ({LABELS[family]})", *deletes)
    for n in route_notes:
        plan.note(n)
    return plan


def plan_remove_from_state(
    state: dict[str, Table] | Table, family: str = "ipv4", routing: Routing | None = None
) -> Plan:
    """The changes that delete our rules, chains, ip rules and routes of one family and nothing else (pure).

    Ours: rules with a ``tproxy-nb:`` comment, rules jumping to a chain of ours (they cannot outlive
    it), the chains themselves (nat and mangle), and ip rules and routes with our ``proto``. Every other
    rule stays where it is, before or after ours.

    Example: ``plan_remove_from_state(parse_save(out)).empty`` -> True when nothing is there.
    """
    tables = _tables(state)
    plan = Plan(f"{tool(family)} {CHAIN} removal")
    text, summaries = [], []
    for name, table in tables.items():
        lines, summary, notes = _remove_lines(table, family)
        if lines:
            text += [f"*{name}", *lines, "COMMIT"]
            summaries.append(summary)
        if name == "nat":
            for n in notes or [f"{_name(family)} is not present; nothing to remove"]:
                plan.note(n)
        elif lines:
            for n in notes:
                plan.note(n)
    if text:
        summary = "; ".join(s if i == 0 else s[0].lower() + s[1:] for i, s in enumerate(summaries))
        plan.changes.append(_restore_change(summary, "\n".join(text) + "\n", None, family))
    _, deletes, _ = _routing_changes(routing or Routing(), [], family)
    if deletes:
        plan.add(f"Delete {len(deletes)} ip rule(s)/route(s) of ours ({LABELS[family]})", *deletes)
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


def current_tables(host: Host, family: str = "ipv4") -> dict[str, Table]:
    """The host's nat and mangle tables of one family with counters (``iptables-save -c``), parsed.

    Tables the host has not created are empty (their built-in chains only). Warnings iptables printed
    (legacy tables next to nft ones) are kept on the nat table.

    Example: ``current_tables(host, "ipv6")["mangle"].chain_rules("ENVOY_MARK")``.
    """
    r = run_iptables(host, [tool(family, "-save"), "-c"])
    tables = _tables(parse_save(r.stdout))
    nat = tables["nat"]
    nat.warnings.extend(w for w in save_warnings(r.stderr) if w not in nat.warnings)
    return tables


def current_state(host: Host, family: str = "ipv4") -> Table:
    """The host's nat table of one family with counters (:func:`current_tables`).

    Example: ``current_state(host, "ipv6").chain_rules("ENVOY_EGRESS")``.
    """
    return current_tables(host, family)["nat"]


SHOW_COLUMNS = ["family", "table", "chain", "num", "packets", "bytes", "target", "target_options", "match", "comment"]
#: The hooks of our chains, per table: the built-in chain they are in.
_HOOKS = {"nat": ("OUTPUT",), "mangle": ("OUTPUT", "PREROUTING")}


def shown_families(host: Host) -> list[str]:
    """The families whose rules the host can hold: its tools are installed (and, for IPv6, the kernel has it).

    Example: ``shown_families(host)`` -> ``['ipv4', 'ipv6']`` on the lab.
    """
    fam = host_families(host)
    return [f for f in FAMILIES if fam.has_tools(f) and not (f == "ipv6" and not fam.ipv6_kernel)]


def show(host: Host) -> pd.DataFrame:
    """Our hooks and every rule of our chains with counters, both families and both tables: the verification table.

    Columns: ``family`` (``ipv4``/``ipv6``), ``table`` (``nat`` for redirect, ``mangle`` for tproxy),
    ``chain``, ``num`` (position in its chain, as ``iptables -L --line-numbers``), ``packets``, ``bytes``
    (ints), ``target``, ``target_options``, ``match``, ``comment``. Empty (with these columns) when nothing
    is applied; a family whose tools are missing has no rows. The ip rules and routes: :func:`show_routing`.

    Example: ``show(host).groupby("family").packets.sum()``.
    """
    rows = []
    for family in shown_families(host):
        for name, table in current_tables(host, family).items():
            ours = OUR_CHAINS[name]
            for chain in (*_HOOKS[name], *ours):
                for num, r in enumerate(table.chain_rules(chain), 1):
                    if chain not in ours and r.target not in ours:
                        continue
                    rows.append(
                        {
                            "family": family,
                            "table": name,
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


def show_routing(host: Host) -> pd.DataFrame:
    """Our ip rules and routes (``proto`` :data:`~tproxy_nb.marks.ROUTE_PROTO`), both families: ``family``, ``kind``,
    ``entry`` (as ``ip rule``/``ip route`` would take it). Empty unless ``interception: tproxy`` is applied.

    Example: ``show_routing(host)["entry"].tolist()`` -> ``['priority 1000 fwmark 0x400/0x400 lookup 400', ...]``.
    """
    state = routing(host, ROUTE_TABLE)
    rows = [
        {"family": e.family, "kind": e.kind, "entry": " ".join(e.fields)}
        for e in state.entries
        if e.proto == str(ROUTE_PROTO)
    ]
    return pd.DataFrame(rows, columns=["family", "kind", "entry"])


# --------------------------------------------------------------------------- operations


def plan_apply(host: Host, settings: Settings, guard_seconds: float | None = DEFAULT_GUARD_SECONDS) -> Plan:
    """Read the host's tables, ip rules and routes and plan what brings the interception in place (nothing when it is).

    ``settings.interception`` picks the chains (redirect: nat ENVOY_EGRESS; tproxy: mangle ENVOY_MARK and
    ENVOY_TPROXY, an ip rule and a local route); the other mode's rules are removed.

    guard_seconds: rollback guard for each family's restore (None: plain atomic restores).

    Raises :class:`StepError` (nothing planned, nothing changed) when iptables is missing, or when the
    host has IPv6 but no ip6tables (:func:`apply_families`).

    Example: ``print(plan_apply(host, settings))``.
    """
    families, notes = apply_families(host_families(host), host.name)
    names = ", ".join(c.name for c in wanted_chains(settings))
    plan = Plan(f"iptables {names}")
    state = routing(host, ROUTE_TABLE)
    for family in families:
        plan.extend(plan_from_state(current_tables(host, family), settings, guard_seconds, family, state))
    for n in notes:
        plan.note(n)
    return plan


def apply(host: Host, settings: Settings, guard_seconds: float | None = DEFAULT_GUARD_SECONDS) -> Plan:
    """Bring the interception in place (IPv4, and IPv6 where the host has it), verify by reading again; return the plan.

    guard_seconds: seconds the host waits for a new SSH connection to confirm before it restores the
    previous rules (:func:`~tproxy_nb.steps.guard.apply_guarded`, once per family); None or 0 applies
    without the guard (the lab). The guard covers the iptables tables; the ip rule and route alone
    change nothing until packets are marked.

    Example: ``apply(host, settings).empty`` -> True on the second run.
    """
    plan = plan_apply(host, settings, guard_seconds)
    plan.apply(host)
    families, _ = apply_families(host_families(host), host.name)
    state = routing(host, ROUTE_TABLE)
    for family in families:
        after = plan_from_state(current_tables(host, family), settings, family=family, routing=state)
        if not after.empty:
            raise StepError(
                f"After applying, the {settings.interception} rules ({LABELS[family]}) on {host.name} are still "
                f"not as wanted; the host now needs:\n{after}"
            )
    return plan


def plan_remove(host: Host) -> Plan:
    """Read the host's tables, ip rules and routes and plan the removal of ours only (both families, both modes).

    A host without iptables (or without ip6tables) cannot hold rules of ours in that family: nothing to
    remove there, and that is not an error (``provision --remove`` still removes the rest).

    Example: ``print(plan_remove(host))``.
    """
    fam = host_families(host)
    plan = Plan(f"iptables {CHAIN} removal")
    state = routing(host, ROUTE_TABLE)
    for family in FAMILIES:
        if family == "ipv6" and not fam.ipv6_kernel:
            plan.note(f"{_name(family)}: the kernel has no IPv6, so no IPv6 rules of ours can be there")
        elif not fam.has_tools(family):
            plan.note(f"{tool(family)} is not installed on {host.name}: no {LABELS[family]} rules of ours are there")
        else:
            plan.extend(plan_remove_from_state(current_tables(host, family), family, state))
    return plan


def remove(host: Host) -> Plan:
    """Delete our rules, chains, ip rules and routes (nothing else) in both families; succeed when there is none.

    Example: ``remove(host); show(host).empty`` -> True.
    """
    plan = plan_remove(host)
    plan.apply(host)
    left = plan_remove(host)
    if not left.empty:
        raise StepError(f"After removal, rules of ours are still on {host.name}:\n{left}")
    return plan
