"""The four requests of the write-up, made with real curl on the target as the service user.

What the answers mean is :mod:`tproxy_nb.analysis.curl`'s to say; this module only runs them.

Example::

    df = run_cases(host, settings, repeat=5)
    df.groupby("case").outcome.value_counts()
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..analysis import packets
from ..analysis.curl import Case, cases, classify, curl_command, parse_output, to_frame
from ..errors import StepError
from ..progress import bar as progress_bar
from ..remote.host import Host, which
from ..render import certs
from ..settings import Settings
from . import capture, facts


def require_curl(host: Host) -> None:
    """Fail with what to install when the target has no curl (the cases are real curl requests)."""
    if which(host, ["curl"], sudo=True)["curl"] is None:
        raise StepError(
            f"curl is not installed on {host.hostname}; the four cases are made with it. "
            "Install it (sudo apt-get install -y curl) and run the check again. Nothing was changed."
        )


#: curl's switch that pins the address family (None: curl's own choice, IPv6 first on a dual-stack host).
FAMILY_FLAGS = {"ipv4": "-4", "ipv6": "-6"}


def proxy_url(s: Settings) -> str:
    """The sidecar as an explicit proxy, as the app names it (``curl -x``, ``HTTPS_PROXY``).

    Example: ``proxy_url(s)`` -> ``"http://127.0.0.1:12008"``.
    """
    return f"http://127.0.0.1:{s.ports.explicit_proxy}"


def egress_ca(certs_dir: str | Path | None = None) -> str:
    """The egress CA certificate (PEM) from the local certificate directory, for a client told to trust it.

    Example: ``egress_ca().startswith("-----BEGIN CERTIFICATE-----")`` -> True.
    """
    path = Path(certs_dir or certs.default_dir()) / f"{certs.EGRESS_CA.name}.pem"
    if not path.is_file():
        raise StepError(f"{path} does not exist: provision the chain first (it generates the egress CA).")
    return path.read_text()


def run_case(
    host: Host,
    case: Case,
    user: str,
    max_time: float = 10,
    family: str | None = None,
    proxy: str | None = None,
    cacert: str | None = None,
) -> dict:
    """Run one case as ``user`` on the host; return one flat record.

    family: ``"ipv4"`` or ``"ipv6"`` makes curl use only that family (``curl -4``/``-6``); None lets curl choose.
    proxy: an explicit proxy URL (``curl -x``); None: the transparent path.
    cacert: a CA certificate (PEM) to trust instead of the system's, fed on standard input.

    Example: ``run_case(host, cases(s)[3], s.service.user)["outcome"]`` -> ``"reset"``.
    """
    cmd = curl_command(case.url, max_time, proxy=proxy, cacert_stdin=cacert is not None)
    if family is not None:
        cmd.insert(cmd.index("curl") + 1, FAMILY_FLAGS[family])
    r = host.run(cmd, user=user, check=False, timeout=max_time + 15, stdin=cacert)
    rec = parse_output(r.stdout, r.stderr, r.exit_code)
    code = rec.get("http_code") or None
    rec.update(
        case=case.name,
        url=case.url,
        expected=case.expected,
        user=user,
        http_code=code,
        outcome=classify(code, r.exit_code, rec["error"]),
        proxy=proxy,
    )
    rec["as_expected"] = rec["outcome"] == case.expected
    rec["family"] = family
    return rec


def run_cases(
    host: Host,
    s: Settings,
    repeat: int = 1,
    as_user: str | None = None,
    progress: bool = True,
    max_time: float = 10,
    family: str | None = None,
    explicit_proxy: bool = False,
    trust_egress_ca: bool = False,
    cacert: str | None = None,
) -> pd.DataFrame:
    """Run the four cases ``repeat`` times each; one row per request, with the ``tls_deny`` mode in ``mode``.

    as_user: ``None`` or ``"service"`` for the service user (through the proxy), ``"envoy"`` for the
      envoy user (its traffic bypasses the chain, so every case is expected to be ``allowed``).
    explicit_proxy: send the requests to the sidecar's explicit proxy port (``curl -x``).
    trust_egress_ca: the denied HTTPS request trusts the egress CA only (``--cacert``), so a
      ``deny-page`` sidecar can show it its 403.
    cacert: a CA certificate (PEM) every HTTPS request trusts instead of the system bundle (``--cacert``),
      e.g. the lab's CA: curl then parses one certificate instead of the whole bundle (column ``cacert``).
    family: ``"ipv4"``/``"ipv6"`` pins curl to that address family (column ``family``); None: curl's choice.

    Example: ``run_cases(host, s, explicit_proxy=True).set_index("case").outcome["https denied"]`` -> ``"denied"``.
    """
    if family is not None and family not in FAMILY_FLAGS:
        raise ValueError(f"family must be one of {', '.join(FAMILY_FLAGS)} or None, not {family!r}")
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    require_curl(host)
    user = s.envoy.user if as_user == "envoy" else s.service.user
    todo = [(i, c) for i in range(repeat) for c in cases(s, explicit_proxy, trust_egress_ca)]
    if as_user == "envoy":
        todo = [(i, Case(c.name, c.url, "allowed")) for i, c in todo]
    proxy = proxy_url(s) if explicit_proxy else None
    egress = egress_ca() if trust_egress_ca else ""
    rows = []
    before = facts.tcp_counters(host)
    with progress_bar(total=len(todo), desc=f"curl as {user}", unit="req", disable=not progress) as bar:
        for i, case in todo:
            https, denied = case.url.startswith("https:"), case.name == "https denied"
            trusted = "\n".join(pem for pem in ((cacert or "") if https else "", egress if denied else "") if pem)
            rec = run_case(host, case, user, max_time, family, proxy=proxy, cacert=trusted or None)
            rec.update(run=i, mode=s.tls_deny, egress_ca_trusted=bool(egress and denied))
            rec["cacert"] = bool(trusted)
            # What the kernel did for this request: an RST for a socket closed with unread data counts here.
            after = facts.tcp_counters(host)
            rec.update({k: after.get(k, 0) - before.get(k, 0) for k in facts.ABORT_COUNTERS})
            before = after
            rows.append(rec)
            bar.update(1)
    return to_frame(rows)


def capture_cases(host: Host, s: Settings, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`run_cases` with a packet capture on the target's loopback: the requests and their packets.

    kwargs: as :func:`run_cases`. The packets carry the ``case`` and ``run`` of the request they belong to.

    Example: ``df, pk = capture_cases(host, s); packets.endings(pk)``.
    """
    with capture.capturing(host, s) as cap:
        df = run_cases(host, s, **kwargs)
    return df, packets.label_cases(packets.parse_tcpdump(cap.text), df)
