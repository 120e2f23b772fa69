"""The ENVOY_EGRESS NAT chain on paper: the rules we want, rendered from the settings (pure).

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

Every rule carries ``-m comment --comment "tproxy-nb: <why>"`` so that the rules are
recognisable as ours in ``iptables-save`` and removal touches nothing else.
:mod:`tproxy_nb.steps.firewall` plans, applies and removes them on a host.

Example::

    print(render_rules(Settings()))
    print(render_rules(Settings(), "ipv6"))
    [r["why"] for r in explain_rules(Settings())]
"""

from __future__ import annotations

from dataclasses import dataclass

from ..marks import COMMENT_PREFIX
from ..settings import Settings

#: Our chain in the nat table.
CHAIN = "ENVOY_EGRESS"
#: The address families the chain is rendered for, and the command each one is loaded with.
FAMILIES = ("ipv4", "ipv6")
TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}
LABELS = {"ipv4": "IPv4", "ipv6": "IPv6"}
LOOPBACK = {"ipv4": "127.0.0.0/8", "ipv6": "::1/128"}
LINK_LOCAL = {"ipv4": "169.254.0.0/16", "ipv6": "fe80::/10"}


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


def wanted_rules(settings: Settings, family: str = "ipv4") -> list[WantedRule]:
    """The rules of ENVOY_EGRESS, in order (the hook is :func:`hook_rule`).

    settings: uses ``envoy.uid``, ``envoy.gid``, ``bypass``, ``ports.http_redirect``, ``ports.tls_redirect``.
    family: ``"ipv4"`` or ``"ipv6"``: only the loopback and link-local ranges differ.

    Example: ``[r.spec for r in wanted_rules(Settings())][1]`` ->
    ``'-m owner --uid-owner 2101 -m comment --comment "tproxy-nb: envoy uid bypasses the proxy" -j RETURN'``.
    """
    tool(family)  # refuses an unknown family
    e, p, lo, ll = settings.envoy, settings.ports, LOOPBACK[family], LINK_LOCAL[family]
    rules = [
        # nat sees only the first packet conntrack tracks of each connection: a SYN for any connection a local
        # process opens. A first packet without SYN is a connection already open when conntrack started (on a
        # host with no nat rules before, the SSH session applying these rules): redirecting it would cut it.
        WantedRule(
            CHAIN,
            _spec(
                "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN", "only new connections (SYN) are redirected", "RETURN"
            ),
            "nat sees only the first packet of each connection that conntrack tracks; for a connection this "
            "host opens, that is its SYN. A first packet without SYN belongs to a connection that was open "
            "before conntrack started tracking (the SSH session applying these rules, on a host that had no "
            "nat rules): redirecting it would cut that session, so it is left alone.",
        ),
        # RETURN the envoy uid first, or Envoy's own upstream connections are redirected back into Envoy: a loop.
        WantedRule(
            CHAIN,
            _spec(f"-m owner --uid-owner {e.uid}", "envoy uid bypasses the proxy", "RETURN"),
            f"Envoy's own upstream connections (uid {e.uid}, {e.user}) must leave directly; without this RETURN "
            "they would be redirected back into Envoy and loop.",
        ),
        WantedRule(
            CHAIN,
            _spec(f"-m owner --gid-owner {e.gid}", "envoy gid bypasses the proxy", "RETURN"),
            f"Processes running with the envoy group (gid {e.gid}, {e.group}) bypass too: a second guard against "
            "loops for helpers that keep the group but not the uid.",
        ),
        *(
            [
                WantedRule(
                    CHAIN,
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
            CHAIN,
            _spec("-o lo", "loopback traffic stays local", "RETURN"),
            "Connections to the host's own addresses route via lo (local services, Envoy admin, the gateways); "
            "sending them through the egress proxy would be wrong and could loop.",
        ),
        WantedRule(
            CHAIN,
            _spec(f"-d {lo}", f"{lo} stays local", "RETURN"),
            "Loopback destinations never leave the host, whatever the route says; they are reached directly.",
        ),
        *(
            [
                WantedRule(
                    CHAIN,
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
    return rules


def render_rules(settings: Settings, family: str = "ipv4") -> str:
    """The complete ``iptables-restore`` text (nat table) for ENVOY_EGRESS and its OUTPUT hook.

    Load it with ``iptables-restore --noflush`` (``ip6tables-restore`` for IPv6) on a host that has
    none of it yet; on a host that may have it, use :func:`tproxy_nb.steps.firewall.plan_apply`,
    which never duplicates the hook.

    settings, family: see :func:`wanted_rules`.

    Example: ``print(render_rules(Settings(), "ipv6"))``.
    """
    lines = [
        f"# tproxy-nb: ENVOY_EGRESS, the transparent-proxy redirect (load with {tool(family, '-restore')} --noflush)",
        "*nat",
        f":{CHAIN} - [0:0]",
        hook_rule(settings).line,
        *(r.line for r in wanted_rules(settings, family)),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def explain_rules(settings: Settings, family: str = "ipv4") -> list[dict[str, str]]:
    """One record per rule (hook first): ``chain``, ``rule`` (the -A line), ``why`` (a sentence).

    Example: ``pd.DataFrame(explain_rules(Settings())).loc[1, "why"]``.
    """
    rules = [hook_rule(settings), *wanted_rules(settings, family)]
    return [{"chain": r.chain, "rule": r.line, "why": r.why} for r in rules]
