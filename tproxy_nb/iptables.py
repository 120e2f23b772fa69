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
:class:`~tproxy_nb.steps.Plan`; only the plan's action touches the host.

Example::

    plan = plan_apply(host, settings)   # dry run: print(plan)
    plan.apply(host)                    # or apply(host, settings)
    show(host)                          # rules with packet/byte counters
    remove(host)                        # only our rules and chain
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd

from .errors import CommandError, CommandTimeout, ConnectError, StepError
from .hosts import Host, Result
from .settings import Settings
from .steps import Change, Plan

#: Our chain in the nat table.
CHAIN = "ENVOY_EGRESS"
#: Every comment of ours starts with this; it is how removal recognises our rules.
COMMENT_PREFIX = "tproxy-nb:"
#: Seconds the host waits for a confirmation before restoring the previous rules.
DEFAULT_GUARD_SECONDS = 20
#: Root-only directory on the host for guard backups (tmpfs: gone after a reboot, as are the rules).
GUARD_DIR = "/run/tproxy-nb"

#: Built-in chains per table: a table absent from ``iptables-save`` is these chains, ACCEPT, empty.
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}

_INSTALL_HINT = ("install the `iptables` package on it (Debian/Ubuntu: sudo apt-get install -y iptables) "
                 "and retry. Nothing was changed.")


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


# --------------------------------------------------------------------------- iptables-save (pure)


def split_spec(spec: str) -> tuple[str, str, str, str | None]:
    """Split a rule spec into (match, target, target options, comment).

    Example: ``split_spec('-p tcp -m comment --comment "x" -j REDIRECT --to-ports 1')`` ->
    ``('-p tcp', 'REDIRECT', '--to-ports 1', 'x')``.
    """
    tokens = shlex.split(spec)
    target, options, comment, match = "", [], None, []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in ("-j", "--jump", "-g", "--goto") and i + 1 < len(tokens):
            target, options = tokens[i + 1], tokens[i + 2:]
            break
        if t == "-m" and i + 3 < len(tokens) and tokens[i + 1] == "comment" and tokens[i + 2] == "--comment":
            comment = tokens[i + 3]
            i += 4
            continue
        match.append(t)
        i += 1
    return shlex.join(match), target, shlex.join(options), comment


def normalize_spec(spec: str) -> tuple[str, ...]:
    """A spec as tokens, without the implicit ``-m tcp``/``-m udp`` iptables adds after ``-p tcp``.

    Two specs are the same rule when their normal forms are equal (quoting and that
    implicit match are how hand-written rules and ``iptables-save`` differ).

    Example: ``normalize_spec("-p tcp --dport 80") == normalize_spec("-p tcp -m tcp --dport 80")`` -> True.
    """
    tokens = shlex.split(spec)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if (tokens[i] == "-m" and i + 1 < len(tokens) and len(out) >= 2 and out[-2] in ("-p", "--protocol")
                and tokens[i + 1] == out[-1]):
            i += 2
            continue
        out.append(tokens[i])
        i += 1
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    """One rule as ``iptables-save -c`` lists it.

    Example: ``Rule("OUTPUT", "-p tcp -j ENVOY_EGRESS", 3, 180).target`` -> ``'ENVOY_EGRESS'``.
    """

    chain: str
    spec: str
    packets: int = 0
    bytes: int = 0

    @property
    def line(self) -> str:
        return f"-A {self.chain} {self.spec}"

    @property
    def match(self) -> str:
        return split_spec(self.spec)[0]

    @property
    def target(self) -> str:
        return split_spec(self.spec)[1]

    @property
    def target_options(self) -> str:
        return split_spec(self.spec)[2]

    @property
    def comment(self) -> str | None:
        return split_spec(self.spec)[3]

    @property
    def ours(self) -> bool:
        """True when the rule carries our comment."""
        return (self.comment or "").startswith(COMMENT_PREFIX)


@dataclass(frozen=True)
class Chain:
    """A chain: built-in ones have a policy and counters; user chains have policy None."""

    name: str
    policy: str | None
    packets: int = 0
    bytes: int = 0


@dataclass
class Table:
    """One table of ``iptables-save``: chains in listing order and rules in listing order.

    warnings: lines iptables printed about the ruleset (e.g. legacy tables hidden from iptables-nft).
    """

    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def chain_rules(self, chain: str) -> list[Rule]:
        """Rules of one chain, in order."""
        return [r for r in self.rules if r.chain == chain]


def empty_table(name: str) -> Table:
    """A table as the kernel starts it: built-in chains, ACCEPT, no rules."""
    return Table(name, {c: Chain(c, "ACCEPT") for c in BUILTIN_CHAINS.get(name, ())})


_CHAIN_RE = re.compile(r"^:(\S+) (\S+)(?: \[(\d+):(\d+)\])?$")
_RULE_RE = re.compile(r"^(?:\[(\d+):(\d+)\] )?-A (\S+) (.*)$")


def parse_save(text: str) -> dict[str, Table]:
    """Parse ``iptables-save [-c] [-t TABLE]`` output into tables (counters as ints).

    text: the command's standard output.

    Raises :class:`StepError` naming the line it cannot read.

    Example::

        t = parse_save(out)["nat"]
        t.chains["OUTPUT"].policy, t.rules[0].packets      # ('ACCEPT', 12)
    """
    tables: dict[str, Table] = {}
    current: Table | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if "Warning" in line and current is not None:
                current.warnings.append(line.lstrip("# "))
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], Table(line[1:]))
            continue
        if current is None:
            raise StepError(f"Cannot read iptables-save output, line {no}: {raw!r} comes before any *table line.")
        if line == "COMMIT":
            current = None
            continue
        m = _CHAIN_RE.match(line)
        if m:
            name, policy = m[1], m[2]
            current.chains[name] = Chain(name, None if policy == "-" else policy, int(m[3] or 0), int(m[4] or 0))
            continue
        m = _RULE_RE.match(line)
        if m:
            current.rules.append(Rule(m[3], m[4], int(m[1] or 0), int(m[2] or 0)))
            continue
        raise StepError(f"Cannot read iptables-save output, line {no}: {raw!r}.")
    if current is not None:
        raise StepError(f"iptables-save output ends inside table {current.name} (no COMMIT): it was cut off.")
    return tables


def save_warnings(text: str) -> list[str]:
    """Warning lines iptables printed (``# Warning: iptables-legacy tables present ...``).

    Example: ``save_warnings("# Warning: iptables-legacy tables present")`` -> ``['Warning: iptables-legacy tables present']``.
    """
    return [line.lstrip("# ").strip() for line in text.splitlines() if "Warning" in line]


def parse_backend(version_text: str) -> str:
    """``"nft"`` or ``"legacy"`` from ``iptables -V`` output.

    Example: ``parse_backend("iptables v1.8.9 (nf_tables)")`` -> ``'nft'``.
    """
    m = re.search(r"iptables v(\d+)\.(\d+)[^\s]*(?:\s+\((\w+)\))?", version_text)
    if not m:
        raise StepError(f"Cannot tell the iptables backend from {version_text.strip()!r}; expected 'iptables vX.Y.Z (nf_tables)' or '(legacy)'.")
    kind = m[3]
    if kind == "nf_tables":
        return "nft"
    if kind == "legacy" or (kind is None and (int(m[1]), int(m[2])) < (1, 8)):
        # Before 1.8 there was only the legacy (x_tables) backend, and it printed no suffix.
        return "legacy"
    raise StepError(f"Unknown iptables backend {kind!r} in {version_text.strip()!r}.")


# --------------------------------------------------------------------------- simulation (pure)


def simulate_restore(tables: dict[str, Table], text: str, *, noflush: bool = True) -> dict[str, Table]:
    """What ``iptables-restore [--noflush]`` would leave, computed without a host.

    Mirrors the kernel's answers for the commands our plans use: ``:CHAIN`` creates a user
    chain or flushes an existing one (both backends do, even with --noflush), ``-A``, ``-I``,
    ``-D`` (by spec or number), ``-F``, ``-X``, ``-N``, ``-P``. A command iptables would refuse
    raises :class:`StepError` and, as on a host, nothing of that table changes.

    tables: current state (from :func:`parse_save`); not modified.
    text: the restore input.
    noflush: as ``--noflush``; without it, each table named is emptied first.

    Example: ``simulate_restore({}, render_rules(Settings()))["nat"].chain_rules("ENVOY_EGRESS")``.
    """
    result = {name: _copy(t) for name, t in tables.items()}
    work: Table | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        # iptables-restore accepts (and without -c ignores) the [packets:bytes] prefix of iptables-save -c.
        line = re.sub(r"^\[\d+:\d+\] ", "", raw.strip())
        if not line or line.startswith("#"):
            continue

        def refuse(why: str) -> StepError:
            return StepError(f"iptables-restore: line {no} failed: {why} ({line})")

        if line.startswith("*"):
            name = line[1:]
            work = _copy(result.get(name) or empty_table(name))
            if not noflush:
                builtin = BUILTIN_CHAINS.get(name, ())
                work.rules = []
                work.chains = {n: c for n, c in work.chains.items() if n in builtin}
            continue
        if work is None:
            raise refuse("not inside a table")
        if line == "COMMIT":
            result[work.name] = work
            work = None
            continue
        m = _CHAIN_RE.match(line)
        if m:
            name, policy = m[1], m[2]
            if policy == "-":
                work.rules = [r for r in work.rules if r.chain != name]
                work.chains.setdefault(name, Chain(name, None))
            else:
                work.chains[name] = Chain(name, policy)
            continue
        _simulate_command(work, line, refuse)
    if work is not None:
        raise StepError(f"iptables-restore: table {work.name} has no COMMIT")
    return result


def _simulate_command(work: Table, line: str, refuse: Callable[[str], StepError]) -> None:
    """Apply one ``-A/-I/-D/-F/-N/-X/-P`` line of a restore input to ``work`` (in place)."""
    words = line.split(None, 2)
    op, chain = words[0], words[1] if len(words) > 1 else None
    rest = words[2] if len(words) > 2 else ""
    if op in ("-A", "-I", "-D", "-P") and chain not in work.chains:
        raise refuse(f"no chain {chain}")
    idx = [i for i, r in enumerate(work.rules) if r.chain == chain]
    if op in ("-A", "-I"):
        pos = None
        if op == "-I":
            num, _, spec = rest.partition(" ")
            pos, rest = (int(num), spec) if num.isdigit() else (1, rest)
        at = (idx[-1] + 1 if idx else len(work.rules)) if pos is None or pos > len(idx) else idx[pos - 1]
        work.rules.insert(at, Rule(chain, rest))
    elif op == "-D":
        if rest.isdigit():
            if not 1 <= int(rest) <= len(idx):
                raise refuse("index of deletion too big")
            del work.rules[idx[int(rest) - 1]]
            return
        want = normalize_spec(rest)
        hit = next((i for i in idx if normalize_spec(work.rules[i].spec) == want), None)
        if hit is None:
            raise refuse("Bad rule (does a matching rule exist in that chain?)")
        del work.rules[hit]
    elif op == "-F":
        work.rules = [r for r in work.rules if chain is not None and r.chain != chain]
    elif op == "-N":
        if chain in work.chains:
            raise refuse("chain already exists")
        work.chains[chain] = Chain(chain, None)
    elif op == "-X":
        if chain not in work.chains or work.chains[chain].policy is not None:
            raise refuse(f"no user-defined chain {chain}")
        if idx or any(r.target == chain for r in work.rules):
            raise refuse(f"chain {chain} is not empty or still referenced")
        del work.chains[chain]
    elif op == "-P":
        work.chains[chain] = replace(work.chains[chain], policy=rest)
    else:
        raise refuse(f"unknown command {op}")


def _copy(t: Table) -> Table:
    return Table(t.name, dict(t.chains), list(t.rules), list(t.warnings))


def ruleset_diff(expected: dict[str, Table], actual: dict[str, Table]) -> list[str]:
    """Differences between two rulesets, counters ignored; a missing table equals an empty one.

    Example: ``ruleset_diff(parse_save(before), parse_save(after))`` -> ``[]`` when nothing changed.
    """
    out = []
    for name in sorted(set(expected) | set(actual)):
        a, b = expected.get(name) or empty_table(name), actual.get(name) or empty_table(name)
        pa = {c.name: c.policy for c in a.chains.values()}
        pb = {c.name: c.policy for c in b.chains.values()}
        if pa != pb:
            out.append(f"{name}: chains/policies {pa} != {pb}")
        for chain in sorted(set(pa) | set(pb)):
            ra = [normalize_spec(r.spec) for r in a.chain_rules(chain)]
            rb = [normalize_spec(r.spec) for r in b.chain_rules(chain)]
            if ra != rb:
                out.append(f"{name} {chain}: expected {len(ra)} rule(s) {[shlex.join(x) for x in ra]}, "
                           f"found {len(rb)} {[shlex.join(x) for x in rb]}")
    return out


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


def rollback_text(saved: str, restore_text: str) -> str:
    """The full restore input that puts back ``saved`` (``iptables-save`` of all tables).

    A table the change touches but the save lacks did not exist (nft creates tables lazily): it
    is added as its empty built-in chains, so the rollback also undoes rules put there.

    Example: ``rollback_text(out, "*filter\\n-A INPUT -j DROP\\nCOMMIT\\n")`` ends with an empty ``*filter``.
    """
    have = set(parse_save(saved))
    extra = []
    for name in changed_tables(restore_text):
        if name in have:
            continue
        have.add(name)
        extra += [f"*{name}", *(f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS.get(name, ())), "COMMIT"]
    text = saved if saved.endswith("\n") or not saved else saved + "\n"
    return text + ("\n".join(extra) + "\n" if extra else "")


# --------------------------------------------------------------------------- facts (read-only commands)


def require_iptables(host: Host) -> None:
    """Raise :class:`StepError` unless iptables, iptables-save and iptables-restore exist on the host.

    Example: ``require_iptables(host)``.
    """
    names = ["iptables", "iptables-save", "iptables-restore"]
    # Under sudo: these live in /usr/sbin, which a login user's PATH often lacks.
    script = "; ".join(f"command -v {n} >/dev/null || echo {n}" for n in names)
    r = host.run(script, sudo=True, check=False, timeout=30)
    missing = r.stdout.split()
    if missing or not r.ok:
        raise StepError(f"{', '.join(missing) or 'iptables'} not found on {host.name}: {_INSTALL_HINT}")


def _read(host: Host, cmd: list[str]) -> Result:
    r = host.run(cmd, sudo=True, check=False, timeout=60)
    if r.exit_code == 127:
        raise StepError(f"{cmd[0]} not found on {host.name}: {_INSTALL_HINT}")
    if not r.ok:
        raise StepError(f"{shlex.join(cmd)} failed on {host.name} (exit {r.exit_code}): {r.tail(3, 'stderr')}")
    return r


def backend(host: Host) -> str:
    """Which kernel backend the host's ``iptables`` drives: ``"nft"`` or ``"legacy"``.

    Rules loaded through one backend are invisible to the other's tools; the notebook shows this
    so a reader knows which ``iptables-save`` tells the truth.

    Example: ``backend(host)`` -> ``'nft'``.
    """
    r = _read(host, ["iptables", "-V"])
    return parse_backend(r.stdout or r.stderr)


def current_state(host: Host) -> Table:
    """The host's nat table with counters (``iptables-save -t nat -c``), parsed.

    Example: ``current_state(host).chain_rules("ENVOY_EGRESS")``.
    """
    r = _read(host, ["iptables-save", "-t", "nat", "-c"])
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


def _failed_line(stderr: str, text: str) -> str:
    # legacy says "line 4 failed", nft "Error occurred at line: 4".
    m = re.search(r"line (\d+) failed|at line:? (\d+)", stderr)
    lines = text.splitlines()
    no = int(m[1] or m[2]) if m else 0
    if 1 <= no <= len(lines):
        return f" The failing line {no} is: {lines[no - 1]}"
    return ""


def restore(host: Host, text: str, timeout: float = 60) -> Result:
    """Load ``text`` with one ``iptables-restore --noflush`` (all of a table or none of it).

    Raises :class:`StepError` with iptables' message and the failing line; nothing was applied then.

    Example: ``restore(host, render_rules(settings))``.
    """
    r = host.run(["iptables-restore", "--noflush"], sudo=True, stdin=text, check=False, timeout=timeout)
    if r.exit_code == 127:
        raise StepError(f"iptables-restore not found on {host.name}: {_INSTALL_HINT}")
    if not r.ok:
        said = [line.strip() for line in (r.stderr or r.stdout).splitlines()
                if line.strip() and not line.lstrip().startswith("Try `")]
        msg = " ".join(said).rstrip(".") or f"exit code {r.exit_code}"
        raise StepError(f"iptables-restore refused the rules on {host.name}: {msg}.{_failed_line(msg, text)} "
                        "Nothing was changed: each table is loaded in one transaction, all or nothing.")
    return r


# --------------------------------------------------------------------------- rollback guard


@dataclass(frozen=True)
class GuardFiles:
    """The guard's files on the host (root-only directory).

    backup: the full rollback input; the timer claims it by renaming it to ``firing``, the
    confirmation by renaming it to ``confirmed``: a rename is atomic, so exactly one of them wins.
    """

    dir: str
    token: str

    def path(self, suffix: str) -> str:
        return f"{self.dir}/iptables-guard-{self.token}.{suffix}"

    @property
    def backup(self) -> str:
        return self.path("rules")

    @property
    def pid(self) -> str:
        return self.path("pid")


def timer_script(files: GuardFiles, seconds: float) -> str:
    """Shell (run as root) that starts the detached rollback timer and prints its PID.

    The timer is a ``setsid`` session leader with stdio on files, so neither the end of the SSH
    session (SIGHUP) nor our command's time limit (it kills its own process group) ends it.

    Example: ``host.run(timer_script(GuardFiles("/run/tproxy-nb", "ab12"), 15), sudo=True)``.
    """
    q = shlex.quote
    b, firing, done, log, pid = (q(files.backup), q(files.path("firing")), q(files.path("rolled-back")),
                                 q(files.path("log")), q(files.pid))
    inner = (f"echo $$ > {pid}; sleep {seconds:g}; "
             f"mv -f {b} {firing} 2>/dev/null || exit 0; "
             f"iptables-restore < {firing} && mv -f {firing} {done}")
    return (f"cd / && setsid sh -c {q(inner)} </dev/null >>{log} 2>&1 & "
            f"i=0; while [ ! -s {pid} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; cat {pid}")


def confirm_script(files: GuardFiles) -> str:
    """Shell (run as root) that cancels the timer; prints ``confirmed`` or ``expired``.

    The rename decides; killing the timer's process group (sh and its sleep; ``kill -SIG -PGID``,
    as dash's kill takes no ``--``) only tidies up.

    Example: ``fresh.run(confirm_script(files), sudo=True).stdout`` -> ``'confirmed\\n'``.
    """
    q = shlex.quote
    b, c, pid = q(files.backup), q(files.path("confirmed")), q(files.pid)
    return (f"if mv -f {b} {c} 2>/dev/null; then "
            f"kill -TERM -$(cat {pid}) 2>/dev/null; "
            f"rm -f {c} {pid} {q(files.path('log'))}; rmdir {q(files.dir)} 2>/dev/null; echo confirmed; "
            f"else echo expired; fi")


def reconnect(host: Host, connect_timeout: float = 5) -> Host:
    """A NEW SSH connection with the same parameters as ``host`` (one attempt; the caller closes it).

    A fresh TCP handshake proves what the old connection cannot: that the rules still let new
    SSH connections in (an established one may survive through conntrack).

    Example: ``with reconnect(host) as fresh: fresh.run("true")``.
    """
    fresh = Host(host.hostname, user=host.user, port=host.port, key_file=host.key_file,
                 passphrase=getattr(host, "passphrase", None), known_hosts=host.known_hosts,
                 connect_timeout=connect_timeout)
    fresh.connect_attempts = 1
    fresh.connect()
    return fresh


@dataclass(frozen=True)
class GuardOutcome:
    """What a guarded apply did: ``confirmed`` is True when the new rules stayed."""

    confirmed: bool
    pid: int
    backup: str
    seconds: float
    detail: str = ""


def apply_guarded(host: Host, restore_text: str, guard_seconds: float = 15,
                  confirm: Callable[[Host], Host] | None = None, state_dir: str = GUARD_DIR) -> GuardOutcome:
    """Apply ``restore_text`` under a rollback guard that the host runs itself.

    1. Save every table (``iptables-save``) to a root-only file under ``state_dir``.
    2. Start a detached timer on the host (``setsid``, PID recorded) that restores the saved
       rules after ``guard_seconds`` unless cancelled.
    3. Apply with ``iptables-restore --noflush``.
    4. Open a NEW SSH connection and, over it, cancel the timer and delete the backup.

    host: the target (its current connection is not trusted as proof).
    restore_text: the restore input to apply (any tables).
    guard_seconds: how long the host waits for the confirmation.
    confirm: ``confirm(host) -> Host`` opens the independent connection the confirmation runs
        over (default :func:`reconnect`); raising :class:`ConnectError` means "the path is cut".
    state_dir: root-only directory on the host for the backup and PID files.

    Raises :class:`StepError` when the restore is refused (the timer is cancelled, nothing
    changed), or when the confirmation fails: then it waits for the host's timer, verifies the
    previous rules are back and says so.

    Example: ``apply_guarded(host, "*filter\\n-A INPUT -p tcp --dport 22 -j DROP\\nCOMMIT\\n", 4)``
    raises StepError("... rolled back by the host itself ...").
    """
    if guard_seconds <= 0:
        raise ValueError("guard_seconds must be positive")
    require_iptables(host)
    saved = _read(host, ["iptables-save"]).stdout
    rollback = rollback_text(saved, restore_text)
    files = GuardFiles(state_dir.rstrip("/"), uuid.uuid4().hex[:12])
    q = shlex.quote
    host.run(f"umask 077 && mkdir -p {q(files.dir)} && chmod 700 {q(files.dir)} && cat > {q(files.backup)}",
             sudo=True, stdin=rollback, timeout=30)
    started = time.monotonic()
    pid_text = host.run(timer_script(files, guard_seconds), sudo=True, timeout=30).stdout.strip()
    if not pid_text.isdigit():
        host.run(["rm", "-f", files.backup], sudo=True, check=False, timeout=30)
        raise StepError(f"Could not start the rollback timer on {host.name} (got {pid_text!r}); nothing was applied.")
    pid = int(pid_text)

    why = ""
    try:
        # A rule set that cuts SSH may also stall this very call: give it about the guard's length.
        restore(host, restore_text, timeout=max(10.0, guard_seconds))
    except StepError:
        # Refused: nothing was applied and this connection still works, so cancel here.
        host.run(confirm_script(files), sudo=True, check=False, timeout=30)
        raise
    except (CommandTimeout, ConnectError, OSError, EOFError) as e:
        why = f"the connection stalled while applying ({e.__class__.__name__})"

    opener = confirm or (lambda h: reconnect(h, connect_timeout=max(1.0, min(5.0, guard_seconds / 3))))
    answer = ""
    if not why:
        fresh = None
        try:
            fresh = opener(host)
            answer = fresh.run(confirm_script(files), sudo=True, timeout=max(5.0, guard_seconds)).stdout.strip()
        except (ConnectError, CommandError) as e:
            why = f"a new SSH connection failed ({str(e).split('. ')[0]})"
        finally:
            if fresh is not None and fresh is not host:
                fresh.close()
    if answer == "confirmed":
        return GuardOutcome(True, pid, files.backup, guard_seconds, "a new SSH connection confirmed the rules")
    if answer == "expired":
        why = f"the confirmation came after the {guard_seconds:g} s guard had fired"
    raise StepError(_rolled_back_message(host, files, guard_seconds, started, rollback, why or "no confirmation"))


def _rolled_back_message(host: Host, files: GuardFiles, seconds: float, started: float, rollback: str, why: str) -> str:
    """Wait for the host's timer, check the saved rules are back, and word the error."""
    time.sleep(max(0.0, started + seconds + 1.0 - time.monotonic()))
    head = f"The new rules were applied on {host.name}, but {why}."
    attempts, last = 5, ""
    # Retry only connecting, a bounded number of times: TCP needs a moment after the rollback.
    for attempt in range(1, attempts + 1):
        fresh = None
        try:
            fresh = reconnect(host, connect_timeout=5)
            status = fresh.run(f"ls {shlex.quote(files.dir)} | grep -F {shlex.quote(files.token)} || true",
                               sudo=True, timeout=30).stdout
            now = parse_save(_read(fresh, ["iptables-save"]).stdout)
            diff = ruleset_diff(parse_save(rollback), now)
            if diff:
                return (f"{head} The host's guard should have restored the previous rules after {seconds:g} s, but "
                        f"they differ from the backup: {'; '.join(diff[:3])}. Restore by hand: "
                        f"sudo iptables-restore < {files.path('firing')} (or {files.backup}).")
            fresh.run(f"rm -f {shlex.quote(files.path('rolled-back'))} {shlex.quote(files.path('log'))} "
                      f"{shlex.quote(files.pid)}; rmdir {shlex.quote(files.dir)} 2>/dev/null || true",
                      sudo=True, check=False, timeout=30)
            marker = "rolled-back" in status
            return (f"{head} The rules were rolled back by the host itself after {seconds:g} s: iptables-save on "
                    f"the host matches the rules saved before the change again"
                    f"{'' if marker else ' (the timer left no marker; checked by content)'}. Nothing of the change "
                    "remains; fix the rules so they keep SSH open and retry.")
        except (ConnectError, CommandError) as e:
            last = str(e)
            if attempt < attempts:
                time.sleep(2)
        finally:
            if fresh is not None:
                fresh.close()
    return (f"{head} The host's guard should have restored the previous rules {seconds:g} s after the change, "
            f"but {host.name} could not be reached to verify it after {attempts} attempts ({last}). The saved "
            f"rules are in {files.backup} (or .firing) on the host.")


def changed_tables(text: str) -> list[str]:
    """Tables named in a restore input.

    Example: ``changed_tables(render_rules(Settings()))`` -> ``['nat']``.
    """
    return re.findall(r"^\*(\S+)\s*$", text, re.M)


def strip_counters(text: str) -> str:
    """``iptables-save`` text without comments, counters and ``[p:b]`` prefixes (for comparing).

    Example: ``strip_counters(before) == strip_counters(after)``.
    """
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        line = re.sub(r"^\[\d+:\d+\] ", "", line)
        line = re.sub(r" \[\d+:\d+\]$", "", line)
        out.append(line)
    return "\n".join(out) + "\n"


__all__ = [
    "CHAIN", "COMMENT_PREFIX", "DEFAULT_GUARD_SECONDS", "Chain", "GuardOutcome", "Rule", "Table", "WantedRule",
    "apply", "apply_guarded", "backend", "current_state", "explain_rules", "hook_rule", "normalize_spec",
    "parse_backend", "parse_save", "plan_apply", "plan_from_state", "plan_remove", "plan_remove_from_state",
    "changed_tables", "reconnect", "remove", "render_rules", "restore", "rollback_text", "ruleset_diff", "save_warnings", "show",
    "simulate_restore", "split_spec", "strip_counters", "wanted_rules",
]
