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
OUTCOMES = ("allowed", "denied", "reset", "error")
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


def cases(s: Settings) -> list[Case]:
    """The four cases: allowed and denied host, over HTTP and HTTPS."""
    ok, bad = s.allowed_hosts[0], (s.denied_examples or ("www.lyft.com",))[0]
    return [
        Case("http allowed", f"http://{ok}/", "allowed"),
        Case("http denied", f"http://{bad}/", "allowed" if bad in s.allowed_hosts else "denied"),
        Case("https allowed", f"https://{ok}/", "allowed"),
        Case("https denied", f"https://{bad}/", "allowed" if bad in s.allowed_hosts else "reset"),
    ]


def curl_command(url: str, max_time: float = 10) -> list[str]:
    """The curl invocation: body, then a marker, then curl's own JSON about the transfer."""
    return ["curl", "-sS", "--max-time", f"{max_time:g}", "-w", MARKER.replace("\n", "\\n") + "%{json}", url]


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
    error = stderr.strip().splitlines()[-1] if stderr.strip() else (info.get("errormsg") or "")
    return {**info, "body": body, "exit_code": exit_code, "error": error or None}


def classify(http_code: int | None, exit_code: int, error: str | None = None) -> str:
    """``allowed`` (2xx), ``denied`` (403), ``reset`` (connection reset: curl exit 35 or 56) or ``error``.

    Example: ``classify(0, 35, "Recv failure: Connection reset by peer")`` -> ``"reset"``.
    """
    if exit_code == 0 and http_code is not None and 200 <= http_code < 300:
        return "allowed"
    if exit_code == 0 and http_code == 403:
        return "denied"
    if exit_code in (35, 56) and (error is None or "reset" in error.lower()):
        return "reset"
    return "error"


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Records from :func:`run_case` as a DataFrame with the main columns first."""
    df = pd.DataFrame(rows)
    first = [
        "case",
        "run",
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
    """The JSON shape of ``tproxy-nb check --json``: case, url, outcome, http_code, exit_code, error, timings (s)."""
    out = []
    for _, row in df.iterrows():
        rec = {k: _plain(row.get(k)) for k in ("case", "url", "outcome", "expected", "http_code", "exit_code", "error")}
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
