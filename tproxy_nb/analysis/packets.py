"""Packets between the app and the sidecar, as tcpdump printed them (pure): who ended each connection, and how.

:mod:`tproxy_nb.steps.check` captures them on the target's loopback (``capture_cases``); this module
reads ``tcpdump -nn -tt -r FILE`` text into a DataFrame and labels each packet with the request it
belongs to, by curl's local port.

Example::

    pk = label_cases(parse_tcpdump(text), requests)
    endings(pk)     # one row per case: "RST" from the sidecar for the denied HTTPS site, "FIN" elsewhere
"""

from __future__ import annotations

import re

import pandas as pd

COLUMNS = ("time", "source", "destination", "flags", "length", "case", "run")
#: tcpdump's flag letters; "." is ACK.
FLAG_NAMES = {"S": "SYN", "F": "FIN", "R": "RST", "P": "PSH", ".": "ACK", "U": "URG", "E": "ECE", "W": "CWR"}

_LINE_RE = re.compile(
    r"^(?P<time>\d+\.\d+)\s+IP6?\s+(?P<src>\S+)\s+>\s+(?P<dst>\S+?):\s+Flags\s+\[(?P<flags>[^\]]*)\]"
    r".*?\blength\s+(?P<length>\d+)"
)


def _port(endpoint: str) -> int:
    """The port of tcpdump's ``address.port`` (IPv4 ``1.2.3.4.80``, IPv6 ``::1.80``); -1 when there is none."""
    _, _, port = endpoint.rpartition(".")
    return int(port) if port.isdigit() else -1


def parse_tcpdump(text: str) -> pd.DataFrame:
    """``tcpdump -nn -tt`` lines as a DataFrame: time (UTC datetime), source, destination (``address.port``),
    flags (tcpdump's letters: ``S``, ``S.``, ``P.``, ``F.``, ``R.``), length (payload bytes); other lines are skipped.

    Example: ``parse_tcpdump("1700000000.5 IP 127.0.0.1.40000 > 127.0.0.1.12000: Flags [R.], seq 1, length 0")``.
    """
    rows = []
    for line in text.splitlines():
        m = _LINE_RE.match(line.strip())
        if m:
            rows.append(
                {
                    "time": pd.to_datetime(float(m["time"]), unit="s", utc=True),
                    "source": m["src"],
                    "destination": m["dst"],
                    "flags": m["flags"],
                    "length": int(m["length"]),
                }
            )
    df = pd.DataFrame(rows, columns=["time", "source", "destination", "flags", "length"])
    df["length"] = df["length"].astype("int64")
    return df


def label_cases(packets: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """Add ``case`` and ``run`` to each packet: the request whose curl local port is one end of it.

    requests: :func:`tproxy_nb.steps.check.run_cases` rows (``case``, ``run``, ``local_port``).

    Example: ``label_cases(parse_tcpdump(text), df).groupby("case").size()``.
    """
    by_port = {
        int(r.local_port): (r.case, r.run) for r in requests.itertuples() if pd.notna(getattr(r, "local_port", None))
    }
    out = packets.copy()
    found = [by_port.get(_port(s)) or by_port.get(_port(d)) for s, d in zip(out["source"], out["destination"])]
    out["case"] = [f[0] if f else None for f in found]
    out["run"] = pd.array([f[1] if f else None for f in found], dtype="Int64")
    return out[list(COLUMNS)]


def flag_names(flags: str) -> str:
    """tcpdump's flag letters in words.

    Example: ``flag_names("R.")`` -> ``"RST ACK"``.
    """
    return " ".join(FLAG_NAMES.get(c, c) for c in flags)


def endings(packets: pd.DataFrame) -> pd.DataFrame:
    """How each request's connection ended: one row per case and run with ``rst`` and ``fin`` packet counts, the
    ``ending`` (``RST`` when any packet carried one, else ``FIN``, else ``open``) and who sent the first of
    them (``by``: ``app`` or ``proxy``, the proxy end being the one that is not curl's port).

    Example: ``endings(label_cases(pk, df)).set_index("case").loc["https denied", "ending"]`` -> ``"RST"``.
    """
    rows = []
    for (case, run), g in packets.dropna(subset=["case"]).groupby(["case", "run"], sort=False):
        rst = g[g["flags"].str.contains("R")]
        fin = g[g["flags"].str.contains("F")]
        first = rst if len(rst) else fin
        # The app's end sent the SYN; whoever sent the first RST/FIN is the app if it is that end.
        syn = g[g["flags"] == "S"]
        app = syn["source"].iloc[0] if len(syn) else None
        by = None if first.empty else ("app" if first["source"].iloc[0] == app else "proxy")
        ending = "RST" if len(rst) else ("FIN" if len(fin) else "open")
        rows.append(
            {"case": case, "run": run, "packets": len(g), "rst": len(rst), "fin": len(fin), "ending": ending, "by": by}
        )
    return pd.DataFrame(rows, columns=["case", "run", "packets", "rst", "fin", "ending", "by"])
