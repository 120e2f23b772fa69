"""A pure model of ``iptables-save`` text: tables, chains and rules, and what ``iptables-restore`` would make of them.

``iptables-save -c`` prints each table as ``*name``, its chains (``:CHAIN POLICY [packets:bytes]``,
policy ``-`` for a user chain), its rules (``[packets:bytes] -A CHAIN spec``) and ``COMMIT``.
:func:`parse_save` reads that into :class:`Table` objects, :func:`simulate_restore` computes what a
restore input would leave (so plans are tested without a host) and :func:`ruleset_diff` compares two
rulesets ignoring counters. Nothing here runs a command.

Example::

    nat = parse_save("*nat\\n:OUTPUT ACCEPT [0:0]\\n[3:180] -A OUTPUT -p tcp -j ENVOY_EGRESS\\nCOMMIT\\n")["nat"]
    nat.rules[0].target, nat.rules[0].packets      # ('ENVOY_EGRESS', 3)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import StepError
from ..marks import COMMENT_PREFIX

#: Every comment of ours starts with this; it is how removal recognises our rules.

#: Built-in chains per table: a table absent from ``iptables-save`` is these chains, ACCEPT, empty.
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}


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
            target, options = tokens[i + 1], tokens[i + 2 :]
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
        if (
            tokens[i] == "-m"
            and i + 1 < len(tokens)
            and len(out) >= 2
            and out[-2] in ("-p", "--protocol")
            and tokens[i + 1] == out[-1]
        ):
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

    Example: ``save_warnings("# Warning: iptables-legacy tables present")``
    -> ``['Warning: iptables-legacy tables present']``.
    """
    return [line.lstrip("# ").strip() for line in text.splitlines() if "Warning" in line]


def parse_backend(version_text: str) -> str:
    """``"nft"`` or ``"legacy"`` from ``iptables -V`` output.

    Example: ``parse_backend("iptables v1.8.9 (nf_tables)")`` -> ``'nft'``.
    """
    m = re.search(r"iptables v(\d+)\.(\d+)[^\s]*(?:\s+\((\w+)\))?", version_text)
    if not m:
        raise StepError(
            f"Cannot tell the iptables backend from {version_text.strip()!r}; "
            "expected 'iptables vX.Y.Z (nf_tables)' or '(legacy)'."
        )
    kind = m[3]
    if kind == "nf_tables":
        return "nft"
    if kind == "legacy" or (kind is None and (int(m[1]), int(m[2])) < (1, 8)):
        # Before 1.8 there was only the legacy (x_tables) backend, and it printed no suffix.
        return "legacy"
    raise StepError(f"Unknown iptables backend {kind!r} in {version_text.strip()!r}.")


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

        # Bound now: refuse() is only ever called in this iteration, but a closure over the loop would not say so.
        def refuse(why: str, no: int = no, line: str = line) -> StepError:
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
    if op == "-F" and chain is None:  # -F alone flushes every chain of the table
        work.rules = []
        return
    if chain is None:
        raise refuse(f"{op} needs a chain name")
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
        work.rules = [r for r in work.rules if r.chain != chain]
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
                out.append(
                    f"{name} {chain}: expected {len(ra)} rule(s) {[shlex.join(x) for x in ra]}, "
                    f"found {len(rb)} {[shlex.join(x) for x in rb]}"
                )
    return out


__all__ = [
    "BUILTIN_CHAINS",
    "COMMENT_PREFIX",
    "Chain",
    "Rule",
    "Table",
    "changed_tables",
    "empty_table",
    "normalize_spec",
    "parse_backend",
    "parse_save",
    "ruleset_diff",
    "save_warnings",
    "simulate_restore",
    "split_spec",
    "strip_counters",
]
