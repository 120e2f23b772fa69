"""The four requests of the write-up and what became of them, as curl saw it (pure).

Parsing curl's ``-w '%{json}'`` output, classifying an outcome, deriving timing
phases. :mod:`tproxy_nb.steps.check` makes the requests on the target.

Example::

    classify(None, 35, "Recv failure: Connection reset by peer")   # -> "reset"
    phases(df).groupby("case").median()
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from ..settings import Settings

#: Separates the response body from curl's JSON write-out on stdout.
MARKER = "\n__TPROXY_NB_CURL__"
#: What the client saw: a 2xx; a 403 (from the gateway, or a deny page); an RST; an end without any status
#: (FIN, empty reply, TLS EOF); a certificate it does not trust; anything else.
OUTCOMES = ("allowed", "denied", "reset", "closed", "untrusted", "error")
#: Timing fields of curl's write-out, in seconds.
TIMING_FIELDS = (
    "time_namelookup",
    "time_connect",
    "time_appconnect",
    "time_pretransfer",
    "time_starttransfer",
    "time_total",
)
#: Phases derived from those fields as httpstat does.
PHASES = ("dns", "connect", "tls", "server", "transfer")


@dataclass(frozen=True)
class Case:
    """One request of the write-up and what the chain should do with it."""

    name: str
    url: str
    expected: str  # one of OUTCOMES


#: What the client sees of a denied HTTPS site under each ``tls_deny`` mode (FACTS measured on the lab):
#: reset: an RST; read-first and sni: a FIN (SSL_ERROR_SYSCALL); deny-page: the egress CA's certificate,
#: which the client does not trust (exit 60) unless told to (then the sidecar's own 403).
DENIED_HTTPS = {"reset": "reset", "read-first": "closed", "sni": "closed", "deny-page": "untrusted"}


def cases(s: Settings, explicit_proxy: bool = False, trust_egress_ca: bool = False) -> list[Case]:
    """The four cases: allowed and denied host, over HTTP and HTTPS, with what ``s.tls_deny`` makes of them.

    explicit_proxy: the app uses the sidecar as its proxy (``curl -x``): a denied HTTPS site gets a 403
      to its CONNECT, whatever the mode.
    trust_egress_ca: the client trusts the egress CA (``deny-page`` then shows its 403).

    Example: ``[c.expected for c in cases(s.replace(tls_deny="sni"))]``
    -> ``["allowed", "denied", "allowed", "closed"]``.
    """
    ok, bad = s.allowed_hosts[0], (s.denied_examples or ("www.lyft.com",))[0]
    allowed = bad in s.allowed_hosts
    https_denied = DENIED_HTTPS[s.tls_deny]
    if explicit_proxy or (https_denied == "untrusted" and trust_egress_ca):
        https_denied = "denied"
    return [
        Case("http allowed", f"http://{ok}/", "allowed"),
        Case("http denied", f"http://{bad}/", "allowed" if allowed else "denied"),
        Case("https allowed", f"https://{ok}/", "allowed"),
        Case("https denied", f"https://{bad}/", "allowed" if allowed else https_denied),
    ]


def curl_command(url: str, max_time: float = 10, proxy: str | None = None, cacert_stdin: bool = False) -> list[str]:
    """The curl invocation: body, then a marker, then curl's own JSON about the transfer.

    proxy: an explicit proxy URL (``-x``); None: the transparent path.
    cacert_stdin: trust only the CA certificate fed on standard input (the egress CA).

    Example: ``curl_command("https://www.lyft.com/", proxy="http://127.0.0.1:12008")[:4]``.
    """
    extra = ["-x", proxy] if proxy else []
    cmd = ["curl", "-sS", "--max-time", f"{max_time:g}", *extra, "-w", MARKER.replace("\n", "\\n") + "%{json}", url]
    if cacert_stdin:
        # Standard input over SSH is a socket that curl cannot open as /dev/stdin: bash hands it a pipe.
        return ["bash", "-c", 'exec "$@" --cacert <(cat)', "curl-trusting-stdin", *cmd]
    return cmd


def parse_output(stdout: str, stderr: str, exit_code: int) -> dict:
    """Split curl's stdout into body and write-out JSON; add exit code and error text.

    Example: ``parse_output('hi\\n__TPROXY_NB_CURL__{"http_code":200}', '', 0)["http_code"]`` -> 200.
    """
    body, sep, meta = stdout.rpartition(MARKER)
    if not sep:
        body, meta = stdout, ""
    try:
        info = json.loads(meta) if meta.strip() else {}
    except json.JSONDecodeError:
        info = {}
    lines = stderr.strip().splitlines()
    # curl's own error line ("curl: (60) ..."); after exit 60 it prints advice below it.
    ours = [x for x in lines if x.startswith("curl: (")]
    error = (ours or lines)[-1] if lines else (info.get("errormsg") or "")
    return {**info, "body": body, "exit_code": exit_code, "error": error or None}


def classify(http_code: int | None, exit_code: int, error: str | None = None) -> str:
    """What the client saw, decided from curl's exit code first and its message second.

    ``allowed`` (2xx), ``denied`` (a 403: a response, or an explicit proxy refusing the CONNECT),
    ``reset`` (exit 35/56 with "reset": an RST), ``closed`` (ended without a status: exit 52 empty
    reply, exit 35/56 with SSL_ERROR_SYSCALL or an unexpected EOF: a FIN), ``untrusted`` (exit 60:
    certificate not trusted) or ``error`` (refused, timed out, anything else).

    Example: ``classify(0, 35, "Recv failure: Connection reset by peer")`` -> ``"reset"``.
    """
    text = (error or "").lower()
    if exit_code == 0:
        if http_code is not None and 200 <= http_code < 300:
            return "allowed"
        return "denied" if http_code == 403 else "error"
    if exit_code == 60:
        return "untrusted"
    if exit_code == 52:
        return "closed"
    if exit_code not in (35, 56):
        return "error"
    if exit_code == 56 and "connect tunnel failed, response 403" in text:
        return "denied"
    if "reset" in text:
        return "reset"
    if any(m in text for m in _CLOSED_MESSAGES):
        return "closed"
    return "error"


#: curl 7.88 / OpenSSL 3.0 messages of a connection the peer closed with a FIN before any status.
_CLOSED_MESSAGES = ("ssl_error_syscall", "unexpected eof", "connection closed", "empty reply")


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Records from :func:`run_case` as a DataFrame with the main columns first."""
    df = pd.DataFrame(rows)
    first = [
        "case",
        "run",
        "mode",
        "user",
        "url",
        "outcome",
        "expected",
        "as_expected",
        "http_code",
        "exit_code",
        "error",
        "local_port",
    ]
    for col in first + list(TIMING_FIELDS):
        if col not in df:
            df[col] = None
    df["http_code"] = pd.array(df["http_code"], dtype="Int64")
    df["local_port"] = pd.array(df["local_port"], dtype="Int64")
    return df[first + [c for c in df.columns if c not in first]]


def phases(df: pd.DataFrame) -> pd.DataFrame:
    """Timing phases per request, in milliseconds, derived from curl's cumulative times (as httpstat does).

    dns = namelookup; connect = connect - namelookup; tls = appconnect - connect (0 for HTTP);
    server = starttransfer - pretransfer; transfer = total - starttransfer.
    """
    t = df[list(TIMING_FIELDS)].astype(float).fillna(0.0)
    tls_end = t["time_appconnect"].where(t["time_appconnect"] > 0, t["time_connect"])
    out = (
        pd.DataFrame(
            {
                "dns": t["time_namelookup"],
                "connect": t["time_connect"] - t["time_namelookup"],
                "tls": tls_end - t["time_connect"],
                "server": t["time_starttransfer"] - t["time_pretransfer"],
                "transfer": t["time_total"] - t["time_starttransfer"],
            }
        ).clip(lower=0)
        * 1000.0
    )
    keep = [c for c in ("case", "run", "user", "outcome") if c in df]
    return pd.concat([df[keep].reset_index(drop=True), out.reset_index(drop=True)], axis=1)


def timing_summary(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median and interquartile range of curl's total time, in milliseconds, per group.

    df: :func:`tproxy_nb.steps.check.run_cases` rows (``time_total`` in seconds) with the ``by`` columns.
    by: the grouping columns, e.g. ``["config", "case"]``; groups keep their first-seen order.

    Example: ``timing_summary(df, ["case"])[["case", "median_ms", "iqr_ms", "n"]]``.
    """
    ms = df["time_total"].astype(float) * 1000
    groups = ms.groupby([df[c] for c in by], sort=False)
    out = pd.DataFrame(
        {
            "median_ms": groups.median(),
            "q1_ms": groups.quantile(0.25),
            "q3_ms": groups.quantile(0.75),
            "n": groups.size(),
        }
    )
    out["iqr_ms"] = out["q3_ms"] - out["q1_ms"]
    return out.round(3).reset_index()


def outcome_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per case: url, expected, every outcome seen (``a/b`` when runs differ), first code, exit and error.

    results: :func:`tproxy_nb.steps.check.run_cases` output (or a recorded run's results).

    Example: ``outcome_table(df)["outcome"].tolist()`` -> ``["allowed", "denied", "allowed", "reset"]``.
    """
    return (
        results.groupby("case", sort=False)
        .agg(
            url=("url", "first"),
            expected=("expected", "first"),
            outcome=("outcome", lambda s: "/".join(sorted(set(s)))),
            http_code=("http_code", "first"),
            exit_code=("exit_code", "first"),
            error=("error", "first"),
        )
        .reset_index()
    )


def to_records(df: pd.DataFrame) -> list[dict]:
    """The JSON shape of ``tproxy-nb check --json``: case, url, mode (``tls_deny``), outcome, expected,
    http_code, exit_code, error, timings (s)."""
    out = []
    for _, row in df.iterrows():
        keys = ("case", "url", "mode", "outcome", "expected", "http_code", "exit_code", "error")
        rec = {k: _plain(row.get(k)) for k in keys}
        rec["timings"] = {k: _plain(row.get(k)) for k in TIMING_FIELDS}
        out.append(rec)
    return out


def _plain(v):
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v
