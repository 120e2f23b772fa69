"""The four requests of the write-up, made with real curl on the target as the service user.

What the answers mean is :mod:`tproxy_nb.analysis.curl`'s to say; this module only runs them.

Example::

    df = run_cases(host, settings, repeat=5)
    df.groupby("case").outcome.value_counts()
"""

from __future__ import annotations

import pandas as pd

from ..analysis.curl import Case, cases, classify, curl_command, parse_output, to_frame
from ..errors import StepError
from ..progress import bar as progress_bar
from ..remote.host import Host, which
from ..settings import Settings


def require_curl(host: Host) -> None:
    """Fail with what to install when the target has no curl (the cases are real curl requests)."""
    if which(host, ["curl"], sudo=True)["curl"] is None:
        raise StepError(
            f"curl is not installed on {host.hostname}; the four cases are made with it. "
            "Install it (sudo apt-get install -y curl) and run the check again. Nothing was changed."
        )


#: curl's switch that pins the address family (None: curl's own choice, IPv6 first on a dual-stack host).
FAMILY_FLAGS = {"ipv4": "-4", "ipv6": "-6"}


def run_case(host: Host, case: Case, user: str, max_time: float = 10, family: str | None = None) -> dict:
    """Run one case as ``user`` on the host; return one flat record.

    family: ``"ipv4"`` or ``"ipv6"`` makes curl use only that family (``curl -4``/``-6``); None lets curl choose.
    """
    cmd = curl_command(case.url, max_time)
    if family is not None:
        cmd.insert(1, FAMILY_FLAGS[family])
    r = host.run(cmd, user=user, check=False, timeout=max_time + 15)
    rec = parse_output(r.stdout, r.stderr, r.exit_code)
    code = rec.get("http_code") or None
    rec.update(
        case=case.name,
        url=case.url,
        expected=case.expected,
        user=user,
        http_code=code,
        outcome=classify(code, r.exit_code, rec["error"]),
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
) -> pd.DataFrame:
    """Run the four cases ``repeat`` times each; one row per request.

    as_user: ``None`` or ``"service"`` for the service user (through the proxy), ``"envoy"`` for the
    envoy user (its traffic bypasses the chain, so every case is expected to be ``allowed``).
    family: ``"ipv4"``/``"ipv6"`` pins curl to that address family (column ``family``); None: curl's choice.

    Example: ``run_cases(host, s, family="ipv6").outcome`` -- the same four outcomes over IPv6.
    """
    if family is not None and family not in FAMILY_FLAGS:
        raise ValueError(f"family must be one of {', '.join(FAMILY_FLAGS)} or None, not {family!r}")
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    require_curl(host)
    user = s.envoy.user if as_user == "envoy" else s.service.user
    todo = [(i, c) for i in range(repeat) for c in cases(s)]
    if as_user == "envoy":
        todo = [(i, Case(c.name, c.url, "allowed")) for i, c in todo]
    rows = []
    with progress_bar(total=len(todo), desc=f"curl as {user}", unit="req", disable=not progress) as bar:
        for i, case in todo:
            rec = run_case(host, case, user, max_time, family)
            rec["run"] = i
            rows.append(rec)
            bar.update(1)
    return to_frame(rows)
