"""The report's write-up, made from a recorded run (pure: a :class:`~.bundle.Recording` in, HTML and figures out).

What someone attaching the report to a ticket needs, in reading order: the headline (how many
requests ended as expected, the RBAC verdicts per gateway, the reset in one line), the settings,
the target's facts, the commit and the command that reproduce it, the key figures.

Example::

    rec = bundle.load("build/report/data")
    html = sections(rec, figures={"timings": "figures/timings.png"})
"""

from __future__ import annotations

import html
import io

import pandas as pd
import yaml

from ..analysis import curl, logs
from ..analysis import trace as tracing
from . import plots
from .bundle import Recording

GATEWAYS = ("igw", "igw_http")


def html_table(df: pd.DataFrame) -> str:
    """``df`` as a plain HTML table: no index column, missing values (NaN, <NA>, None) as empty cells.

    Example: ``html_table(pd.DataFrame({"a": [1, None]}))`` -> a table whose second cell is empty.
    """
    shown = df.astype(object).where(df.notna(), "")
    return shown.to_html(index=False, border=0, classes="data", na_rep="")


def verdict_counts(rec: Recording) -> pd.DataFrame:
    """RBAC verdicts per gateway, from the recorded debug logs: ``envoy`` and one column per decision."""
    parsed = rec.parsed()
    frames = {gw: logs.rbac_decisions(parsed[gw]["debug"]) for gw in GATEWAYS if gw in parsed}
    rows = [{"envoy": gw, **df["decision"].value_counts().to_dict()} for gw, df in frames.items()]
    out = pd.DataFrame(rows).fillna(0)
    for col in out.columns.drop("envoy"):
        out[col] = out[col].astype(int)
    return out


def reset_evidence(rec: Recording) -> str:
    """One sentence: the reset curl saw, the 403 the gateway sent, what the sidecar's access log says.

    Example: ``"https denied: curl exit 35 (Recv failure: Connection reset by peer); igw answered 403 ..."``.
    """
    resets = rec.results[rec.results["outcome"] == "reset"]
    if resets.empty:
        return "No request ended in a connection reset."
    row = resets.iloc[-1]
    said = f"{row['case']}: curl exit {row['exit_code']} ({row['error']})"
    parsed = rec.parsed()
    igw = parsed.get("igw", {}).get("access")
    if igw is not None and len(igw):
        denied = igw[(igw["method"] == "CONNECT") & (igw["response_code"] == 403)]
        if len(denied):
            last = denied.iloc[-1]
            said += f"; igw answered 403 to CONNECT {last['authority']} ({last['response_code_details']})"
    side = parsed.get("sidecar", {}).get("access")
    if side is not None and len(side) and pd.notna(row.get("local_port")):
        port = f":{int(row['local_port'])}"
        entry = side[side["downstream_remote_address"].str.endswith(port, na=False)]
        if len(entry):
            e = entry.iloc[-1]
            said += (
                f"; the sidecar logged flags {e['response_flags']} with {e['bytes_received']} bytes read from curl "
                "(the ClientHello left unread, so closing the socket sent RST)"
            )
    return said + "."


def headline(rec: Recording) -> list[str]:
    """Three lines: requests as expected, verdicts per gateway, the reset evidence."""
    r = rec.results
    ok = int(r["as_expected"].astype(bool).sum())
    verdicts = verdict_counts(rec)
    per_gw = "; ".join(
        f"{row['envoy']}: " + ", ".join(f"{int(row[c])} {c}" for c in verdicts.columns if c != "envoy")
        for _, row in verdicts.iterrows()
    )
    return [
        f"{ok}/{len(r)} requests ended as expected ({r['case'].nunique()} cases × {r['run'].nunique()} runs).",
        f"RBAC verdicts per gateway: {per_gw or 'none recorded'}.",
        reset_evidence(rec),
    ]


def last_per_case(results: pd.DataFrame) -> pd.DataFrame:
    """The last request of each case (the one a trace follows), in case order."""
    return results.groupby("case", sort=False).tail(1)


def traces(rec: Recording) -> dict[str, pd.DataFrame]:
    """Each case's last request traced through the recorded logs: ``{case: trace}``."""
    parsed = rec.parsed()
    return {row["case"]: tracing.trace(row, parsed) for _, row in last_per_case(rec.results).iterrows()}


def figures(rec: Recording) -> dict[str, plots.Figure]:
    """The key figures: timings per case, phases, every case's trace (small multiples)."""
    results = rec.results
    out = {"timings": plots.timing_distribution(results, title="Total time per request through the proxy")}
    completed = results[results["exit_code"] == 0]
    if len(completed):
        out["phases"] = plots.phase_breakdown(curl.phases(completed))
    out["traces"] = plots.small_multiples(traces(rec))
    return out


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    return buf.getvalue()


def facts_table(facts: dict[str, str]) -> str:
    esc = html.escape
    return (
        "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts.items()) + "</table>"
    )


def sections(rec: Recording, figure_files: dict[str, str]) -> str:
    """The write-up's HTML sections (headline first), for ``index.html``.

    figure_files: ``{figure name: path relative to index.html}`` of the PNGs written beside it.
    """
    esc = html.escape
    lines = headline(rec)
    run = rec.run
    command = run.get("command", "tproxy-nb run")
    commit = run.get("commit", "unknown")
    settings_yaml = yaml.safe_dump(rec.settings.to_dict(), sort_keys=False)
    captions = {
        "timings": "Total time per request, one dot each, median marked (log scale: HTTP and HTTPS both readable).",
        "phases": "Where the time goes in the completed requests (median per phase, as curl timed them).",
        "traces": "Each case's last request across curl, the sidecar and a gateway (the explorer, pre-rendered).",
    }
    figs = "".join(
        f'<figure><img src="{esc(path)}" alt="{esc(name)}" style="max-width:100%">'
        f"<figcaption>{esc(captions.get(name, name))}</figcaption></figure>"
        for name, path in figure_files.items()
    )
    return f"""<section id="headline">
<h2>Headline</h2>
<ul class="headline">{"".join(f"<li>{esc(line)}</li>" for line in lines)}</ul>
</section>
<section id="outcomes"><h2>The four requests</h2>
{html_table(curl.outcome_table(rec.results))}
<h3>RBAC verdicts per gateway</h3>
{html_table(verdict_counts(rec))}
</section>
<section id="settings"><h2>Settings used</h2><pre>{esc(settings_yaml)}</pre></section>
<section id="target"><h2>The target</h2>{facts_table(rec.facts)}</section>
<section id="reproduce"><h2>Reproduce</h2>
<p>Project commit <code>{esc(commit)}</code>. From a checkout at that commit, as root:</p>
<pre>{esc(command)}</pre>
<p>Without any host, the analysis re-runs on this run's data:
<code>tproxy-nb run --target replay:data</code> (or <code>tproxy-nb trace --target replay:data</code>).</p>
</section>
<section id="figures"><h2>Key figures</h2>{figs}</section>
<section id="data"><h2>Data</h2>
<p>Everything above comes from <a href="data/">data/</a>: curl's results, the three Envoys' logs, their configs,
our iptables chain, admin stats before and after, each file's sha256 in
<a href="data/manifest.json">data/manifest.json</a>.</p>
</section>
"""
