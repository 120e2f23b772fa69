"""The interception rules on paper: what we want, rendered from the settings (pure).

``interception: redirect`` (the default) is the ENVOY_EGRESS NAT chain below; ``interception: tproxy``
is the mangle chains ENVOY_MARK and ENVOY_TPROXY plus an ip rule and a route (further down).

Outbound TCP from the host is redirected to the Envoy sidecar with the ``nat`` table, the same
chain in ``iptables`` (IPv4) and ``ip6tables`` (IPv6)::

    OUTPUT ──-p tcp──> ENVOY_EGRESS
                        ├─ not a SYN ─────────────> RETURN (connections open before conntrack began)
                        ├─ envoy uid / envoy gid ──> RETURN (Envoy's own traffic leaves directly)
                        ├─ root (uid 0) ──────────> RETURN (bypass.root: apt, agents, the host's services)
                        ├─ -o lo / -d 127.0.0.0/8 ──> RETURN (local stays local; IPv6: ::1/128)
                        ├─ -d 169.254.0.0/16 ──────> RETURN (bypass.link_local: metadata, resolver; IPv6: fe80::/10)
                        ├─ --dport 80 ────────────> REDIRECT :12003 (sidecar, plain HTTP)
                        └─ any other port ────────> REDIRECT :12000 (sidecar, TLS)

REDIRECT sends a connection to the primary address of the interface it leaves by; for locally
generated packets that is loopback: 127.0.0.1, or ``::1`` for IPv6, where the sidecar also listens.

TPROXY keeps the destination and needs every packet of a connection routed back in, so it takes three
pieces (:func:`wanted_mark_rules`, :func:`ip_entries`, :func:`wanted_tproxy_rules`)::

    mangle OUTPUT ──-p tcp──> ENVOY_MARK
                               ├─ not a SYN, original direction ─> CONNMARK --restore-mark (the SYN's mark)
                               ├─ not a SYN ──────────────────────> RETURN (marked above, or an older connection)
                               ├─ the NAT chain's exclusions ─────> RETURN (envoy uid/gid, root, local, link-local)
                               └─ a new connection ───────────────> MARK 0x400, CONNMARK --save-mark
    ip rule fwmark 0x400/0x400 lookup 400 ──> table 400: local default dev lo (marked packets go to lo)
    mangle PREROUTING ──-p tcp──> ENVOY_TPROXY
                               ├─ not marked ──> RETURN
                               ├─ --dport 80 ──> TPROXY 127.0.0.1:12003 (IPv6 ::1), destination unchanged
                               └─ other ports ─> TPROXY 127.0.0.1:12000 (IPv6 ::1)

The sidecar's listeners are then transparent (IP_TRANSPARENT, so CAP_NET_ADMIN); the ip rule and route
carry ``proto 201`` (:data:`~tproxy_nb.marks.ROUTE_PROTO`) as the rules carry their comment.

Every rule carries ``-m comment --comment "tproxy-nb: <why>"`` so that the rules are
recognisable as ours in ``iptables-save`` and removal touches nothing else.
:mod:`tproxy_nb.steps.firewall` plans, applies and removes them on a host.

Example::

    print(render_rules(Settings()))
    print(render_rules(Settings(), "ipv6"))
    print(render_rules(Settings().replace(interception="tproxy")), render_routing())
    [r["why"] for r in explain_rules(Settings())]
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..marks import COMMENT_PREFIX, ROUTE_PROTO
from ..settings import Settings

#: Our chain in the nat table.
CHAIN = "ENVOY_EGRESS"
#: The address families the chain is rendered for, and the command each one is loaded with.
FAMILIES = ("ipv4", "ipv6")
TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}
LABELS = {"ipv4": "IPv4", "ipv6": "IPv6"}
LOOPBACK = {"ipv4": "127.0.0.0/8", "ipv6": "::1/128"}
LINK_LOCAL = {"ipv4": "169.254.0.0/16", "ipv6": "fe80::/10"}
#: interception: tproxy — the mangle chains, the packet mark, the routing table (and its ip rule's priority)
#: and the address the sidecar's transparent listeners are bound to.
MARK_CHAIN = "ENVOY_MARK"
TPROXY_CHAIN = "ENVOY_TPROXY"
#: Every chain of ours, per table: the other interception mode's chains are removed when switching.
OUR_CHAINS = {"nat": (CHAIN,), "mangle": (MARK_CHAIN, TPROXY_CHAIN)}
FWMARK = 0x400
ROUTE_TABLE = 400
RULE_PRIORITY = 1000
LISTEN_IP = {"ipv4": "127.0.0.1", "ipv6": "::1"}


def tool(family: str, suffix: str = "") -> str:
    """The command for ``family``: ``tool("ipv6", "-save")`` -> ``'ip6tables-save'``.

    Raises ValueError for an unknown family.
    """
    if family not in TOOLS:
        raise ValueError(f"unknown address family {family!r}; expected one of {', '.join(FAMILIES)}")
    return TOOLS[family] + suffix


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
    return WantedRule(
        "OUTPUT",
        _spec("-p tcp", f"outbound TCP from this host goes through {CHAIN}", CHAIN),
        "Locally generated packets traverse nat OUTPUT and never PREROUTING (that hook sees only packets "
        "arriving from outside), so the hook lives in OUTPUT. Only TCP is sent in: Envoy proxies TCP; "
        "UDP such as DNS leaves unchanged.",
    )


def _syn_only(chain: str, comment: str, why: str) -> WantedRule:
    """RETURN every TCP packet but a connection's first (a pure SYN): open connections are left alone."""
    return WantedRule(chain, _spec("-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN", comment, "RETURN"), why)


def _exclusions(settings: Settings, family: str, chain: str) -> list[WantedRule]:
    """The RETURN rules every interception shares: envoy uid and gid, root, local and link-local (per ``bypass``)."""
    e, lo, ll = settings.envoy, LOOPBACK[family], LINK_LOCAL[family]
    return [
        # RETURN the envoy uid first, or Envoy's own upstream connections are redirected back into Envoy: a loop.
        WantedRule(
            chain,
            _spec(f"-m owner --uid-owner {e.uid}", "envoy uid bypasses the proxy", "RETURN"),
            f"Envoy's own upstream connections (uid {e.uid}, {e.user}) must leave directly; without this RETURN "
            "they would be redirected back into Envoy and loop.",
        ),
        WantedRule(
            chain,
            _spec(f"-m owner --gid-owner {e.gid}", "envoy gid bypasses the proxy", "RETURN"),
            f"Processes running with the envoy group (gid {e.gid}, {e.group}) bypass too: a second guard against "
            "loops for helpers that keep the group but not the uid.",
        ),
        *(
            [
                WantedRule(
                    chain,
                    _spec(
                        "-m owner --uid-owner 0",
                        "root (uid 0) bypasses the proxy: apt, cloud agents, services of the host",
                        "RETURN",
                    ),
                    "Root's connections leave directly (bypass.root): apt-get, the cloud agents (SSM, CloudWatch) "
                    "and the host's own services keep working, but they are not checked against the allowlist; "
                    "anything that runs as root can reach any site.",
                )
            ]
            if settings.bypass.root
            else []
        ),
        # Routing picks lo for every local address (127/8 and the host's own IPs): local services stay local.
        WantedRule(
            chain,
            _spec("-o lo", "loopback traffic stays local", "RETURN"),
            "Connections to the host's own addresses route via lo (local services, Envoy admin, the gateways); "
            "sending them through the egress proxy would be wrong and could loop.",
        ),
        WantedRule(
            chain,
            _spec(f"-d {lo}", f"{lo} stays local", "RETURN"),
            "Loopback destinations never leave the host, whatever the route says; they are reached directly.",
        ),
        *(
            [
                WantedRule(
                    chain,
                    _spec(
                        f"-d {ll}",
                        f"link-local {ll} bypasses the proxy: instance metadata, VPC resolver, time sync",
                        "RETURN",
                    ),
                    f"Link-local destinations ({ll}) leave directly (bypass.link_local): on EC2 the instance "
                    "metadata service (169.254.169.254: the instance role's credentials), the VPC resolver over TCP "
                    "and time sync live there. Any process can reach them, as without the chain.",
                )
            ]
            if settings.bypass.link_local
            else []
        ),
    ]


def wanted_rules(settings: Settings, family: str = "ipv4") -> list[WantedRule]:
    """The rules of ENVOY_EGRESS, in order (the hook is :func:`hook_rule`).

    settings: uses ``envoy.uid``, ``envoy.gid``, ``bypass``, ``ports.http_redirect``, ``ports.tls_redirect``.
    family: ``"ipv4"`` or ``"ipv6"``: only the loopback and link-local ranges differ.

    Example: ``[r.spec for r in wanted_rules(Settings())][1]`` ->
    ``'-m owner --uid-owner 2101 -m comment --comment "tproxy-nb: envoy uid bypasses the proxy" -j RETURN'``.
    """
    tool(family)  # refuses an unknown family
    p = settings.ports
    return [
        # nat sees only the first packet conntrack tracks of each connection: a SYN for any connection a local
        # process opens. A first packet without SYN is a connection already open when conntrack started (on a
        # host with no nat rules before, the SSH session applying these rules): redirecting it would cut it.
        _syn_only(
            CHAIN,
            "only new connections (SYN) are redirected",
            "nat sees only the first packet of each connection that conntrack tracks; for a connection this "
            "host opens, that is its SYN. A first packet without SYN belongs to a connection that was open "
            "before conntrack started tracking (the SSH session applying these rules, on a host that had no "
            "nat rules): redirecting it would cut that session, so it is left alone.",
        ),
        *_exclusions(settings, family, CHAIN),
        WantedRule(
            CHAIN,
            _spec(
                "-p tcp -m tcp --dport 80",
                "port 80 goes to the sidecar HTTP listener",
                f"REDIRECT --to-ports {p.http_redirect}",
            ),
            f"Plain HTTP goes to the sidecar's HTTP listener on {p.http_redirect}; REDIRECT keeps the original "
            "destination readable for Envoy (SO_ORIGINAL_DST) and Envoy routes on the Host header.",
        ),
        WantedRule(
            CHAIN,
            _spec(
                "-p tcp",
                "every other TCP port goes to the sidecar TLS listener",
                f"REDIRECT --to-ports {p.tls_redirect}",
            ),
            f"Every other TCP port (443 above all) goes to the sidecar's TLS listener on {p.tls_redirect}, "
            "which reads the SNI and the original destination.",
        ),
    ]


# --------------------------------------------------------------------------- TPROXY (interception: tproxy)


def _hex(n: int) -> str:
    return f"{n:#x}"


def mark_hook(settings: Settings | None = None) -> WantedRule:
    """The mangle OUTPUT rule that sends outbound TCP into ENVOY_MARK.

    Example: ``mark_hook().line`` -> ``'-A OUTPUT -p tcp -m comment --comment "tproxy-nb: ..." -j ENVOY_MARK'``.
    """
    return WantedRule(
        "OUTPUT",
        _spec("-p tcp", f"outbound TCP from this host goes through {MARK_CHAIN}", MARK_CHAIN),
        "Locally generated packets traverse mangle OUTPUT; marking them there makes the kernel route them "
        "again (by the mark) before they leave. Only TCP: Envoy proxies TCP; UDP such as DNS leaves unchanged.",
    )


def tproxy_hook(settings: Settings | None = None) -> WantedRule:
    """The mangle PREROUTING rule that sends TCP arriving (on lo, marked) into ENVOY_TPROXY.

    Example: ``tproxy_hook().chain`` -> ``'PREROUTING'``.
    """
    return WantedRule(
        "PREROUTING",
        _spec("-p tcp", f"TCP arriving here goes through {TPROXY_CHAIN}", TPROXY_CHAIN),
        "A marked packet is routed to lo and comes back in through PREROUTING, the only hook where TPROXY "
        "works: there it is handed to the sidecar's listener without changing its destination.",
    )


def wanted_mark_rules(settings: Settings, family: str = "ipv4") -> list[WantedRule]:
    """The rules of ENVOY_MARK (mangle OUTPUT): the NAT chain's exclusions, then mark the connection.

    A connection is marked at its SYN (the packet mark, and the conntrack entry's mark so the connection's
    later packets get it back): every packet of it must be routed to lo, not only the first as with nat.

    Example: ``wanted_mark_rules(Settings())[-2].target_options`` is not a field; see ``.spec``:
    ``'-p tcp -m comment --comment "tproxy-nb: ..." -j MARK --set-xmark 0x400/0x400'``.
    """
    tool(family)
    m = _hex(FWMARK)
    return [
        WantedRule(
            MARK_CHAIN,
            _spec(
                "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctdir ORIGINAL",
                "later packets of a marked connection get its mark back",
                f"CONNMARK --restore-mark --nfmask {m} --ctmask {m}",
            ),
            "Unlike nat, which conntrack applies to a whole connection, a mark is per packet: each later packet "
            "the client sends gets the mark its connection got at the SYN, so it too is routed to the sidecar. "
            "Only in the original direction: the sidecar's answers (the reply direction) must not be marked.",
        ),
        _syn_only(
            MARK_CHAIN,
            "only new connections (SYN) are marked",
            "Only a SYN starts a connection of ours: a packet without SYN whose connection was not marked at its "
            "SYN (the rule above gave it nothing back) belongs to a connection opened before these rules, such "
            "as the SSH session applying them; sending it to the sidecar would cut it, so it is left alone.",
        ),
        *_exclusions(settings, family, MARK_CHAIN),
        WantedRule(
            MARK_CHAIN,
            _spec("-p tcp", f"mark the new connection: route it by table {ROUTE_TABLE}", f"MARK --set-xmark {m}/{m}"),
            f"The mark ({m}) sends the packet to routing table {ROUTE_TABLE} (ip rule), whose only route "
            "delivers every destination locally, on lo: the packet comes back in through PREROUTING.",
        ),
        WantedRule(
            MARK_CHAIN,
            _spec(
                "-p tcp",
                "remember the mark in the conntrack entry of the connection",
                f"CONNMARK --save-mark --nfmask {m} --ctmask {m}",
            ),
            "The conntrack entry keeps the mark, so the first rule of this chain can give it back to the "
            "connection's later packets.",
        ),
    ]


def wanted_tproxy_rules(settings: Settings, family: str = "ipv4") -> list[WantedRule]:
    """The rules of ENVOY_TPROXY (mangle PREROUTING): marked TCP to the sidecar's transparent listeners.

    Example: ``wanted_tproxy_rules(Settings())[1].spec`` ends with
    ``'-j TPROXY --on-port 12003 --on-ip 127.0.0.1 --tproxy-mark 0x400/0x400'``.
    """
    tool(family)
    m, ip, p = _hex(FWMARK), LISTEN_IP[family], settings.ports
    to = f"--on-ip {ip} --tproxy-mark {m}/{m}"
    return [
        WantedRule(
            TPROXY_CHAIN,
            _spec(f"-p tcp -m mark ! --mark {m}/{m}", "only packets ENVOY_MARK marked go to the sidecar", "RETURN"),
            "Packets from outside, and local ones that were not marked, pass untouched: PREROUTING sees every "
            "packet the host receives.",
        ),
        WantedRule(
            TPROXY_CHAIN,
            _spec(
                "-p tcp -m tcp --dport 80",
                "port 80 goes to the sidecar HTTP listener",
                f"TPROXY --on-port {p.http_redirect} {to}",
            ),
            f"Plain HTTP goes to the sidecar's HTTP listener ({ip} port {p.http_redirect}); TPROXY leaves the "
            "destination as it was, so the accepted socket's own local address is the site the app asked for.",
        ),
        WantedRule(
            TPROXY_CHAIN,
            _spec(
                "-p tcp",
                "every other TCP port goes to the sidecar TLS listener",
                f"TPROXY --on-port {p.tls_redirect} {to}",
            ),
            f"Every other TCP port (443 above all) goes to the sidecar's TLS listener ({ip} port {p.tls_redirect}), "
            "which must be transparent (IP_TRANSPARENT) to accept a connection for an address that is not its own.",
        ),
    ]


@dataclass(frozen=True)
class RouteEntry:
    """One ip rule or route of ours (``kind``: ``rule`` or ``route``), as iproute2 takes and lists it.

    fields: what identifies it (``ip -j`` output parsed by :func:`tproxy_nb.steps.facts.parse_routing`
    gives the same tuple); ``proto`` (:data:`~tproxy_nb.marks.ROUTE_PROTO`) is added to every command.

    Example: ``ip_entries("ipv6")[1].add`` ->
    ``['ip', '-6', 'route', 'add', 'local', 'default', 'dev', 'lo', 'table', '400', 'proto', '201']``.
    """

    kind: str
    family: str
    fields: tuple[str, ...]
    why: str = ""

    def argv(self, verb: str) -> list[str]:
        return [
            "ip",
            *(["-6"] if self.family == "ipv6" else []),
            self.kind,
            verb,
            *self.fields,
            "proto",
            str(ROUTE_PROTO),
        ]

    @property
    def add(self) -> list[str]:
        return self.argv("add")

    @property
    def delete(self) -> list[str]:
        return self.argv("del")


def ip_entries(family: str = "ipv4") -> list[RouteEntry]:
    """The ip rule and the route TPROXY needs in ``family``: marked packets are delivered locally.

    Example: ``shlex.join(ip_entries()[0].add)``
    -> ``'ip rule add priority 1000 fwmark 0x400/0x400 lookup 400 proto 201'``.
    """
    tool(family)
    m, t = _hex(FWMARK), str(ROUTE_TABLE)
    return [
        RouteEntry(
            "rule",
            family,
            ("priority", str(RULE_PRIORITY), "fwmark", f"{m}/{m}", "lookup", t),
            f"Packets with the mark are routed by table {t} instead of the main table.",
        ),
        RouteEntry(
            "route",
            family,
            ("local", "default", "dev", "lo", "table", t),
            f"Table {t} says every destination is local: a marked packet is delivered on lo (back through "
            "PREROUTING, where TPROXY takes it) instead of leaving by the default route.",
        ),
    ]


@dataclass(frozen=True)
class ChainSpec:
    """One chain of ours as wanted: its table, name, hook and rules, for one family."""

    table: str
    name: str
    hook: WantedRule
    rules: tuple[WantedRule, ...]
    family: str

    @property
    def label(self) -> str:
        return f"{self.name} ({LABELS[self.family]})"


def wanted_chains(settings: Settings, family: str = "ipv4") -> list[ChainSpec]:
    """The chains ``settings.interception`` wants in ``family`` (the other mode's tables want none of ours).

    Example: ``[c.name for c in wanted_chains(Settings().replace(interception="tproxy"))]``
    -> ``['ENVOY_MARK', 'ENVOY_TPROXY']``.
    """
    if settings.interception == "tproxy":
        return [
            ChainSpec("mangle", MARK_CHAIN, mark_hook(settings), tuple(wanted_mark_rules(settings, family)), family),
            ChainSpec(
                "mangle", TPROXY_CHAIN, tproxy_hook(settings), tuple(wanted_tproxy_rules(settings, family)), family
            ),
        ]
    return [ChainSpec("nat", CHAIN, hook_rule(settings), tuple(wanted_rules(settings, family)), family)]


def render_rules(settings: Settings, family: str = "ipv4") -> str:
    """The complete ``iptables-restore`` text of the interception ``settings.interception`` names.

    ``redirect``: the nat table's ENVOY_EGRESS and its OUTPUT hook. ``tproxy``: the mangle table's
    ENVOY_MARK (hooked into OUTPUT) and ENVOY_TPROXY (hooked into PREROUTING); the ip rule and route
    they need are :func:`render_routing`.

    Load it with ``iptables-restore --noflush`` (``ip6tables-restore`` for IPv6) on a host that has
    none of it yet; on a host that may have it, use :func:`tproxy_nb.steps.firewall.plan_apply`,
    which never duplicates a hook and removes the other mode's rules.

    settings, family: see :func:`wanted_rules`.

    Example: ``print(render_rules(Settings(), "ipv6"))``.
    """
    chains = wanted_chains(settings, family)
    names = " and ".join(c.name for c in chains)
    what = "the transparent-proxy redirect" if settings.interception == "redirect" else "the TPROXY interception"
    lines = [f"# tproxy-nb: {names}, {what} (load with {tool(family, '-restore')} --noflush)"]
    for table in dict.fromkeys(c.table for c in chains):
        mine = [c for c in chains if c.table == table]
        lines += [f"*{table}", *(f":{c.name} - [0:0]" for c in mine)]
        for c in mine:
            lines += [c.hook.line, *(r.line for r in c.rules)]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_routing(family: str = "ipv4") -> str:
    """The ip commands that give TPROXY its route (one per line): marked packets are delivered on lo.

    Example: ``print(render_routing("ipv6"))``.
    """
    return "".join(shlex.join(e.add) + "\n" for e in ip_entries(family))


def explain_rules(settings: Settings, family: str = "ipv4") -> list[dict[str, str]]:
    """One record per rule (each hook before its chain): ``chain``, ``rule`` (the -A line), ``why`` (a sentence).

    For ``interception: tproxy`` the ip rule and route follow, with ``chain`` ``ip rule`` / ``ip route``.

    Example: ``pd.DataFrame(explain_rules(Settings())).loc[1, "why"]``.
    """
    rows = [
        {"chain": r.chain, "rule": r.line, "why": r.why}
        for c in wanted_chains(settings, family)
        for r in (c.hook, *c.rules)
    ]
    if settings.interception == "tproxy":
        rows += [{"chain": f"ip {e.kind}", "rule": shlex.join(e.add), "why": e.why} for e in ip_entries(family)]
    return rows
