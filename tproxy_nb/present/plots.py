"""Figures: each function takes a DataFrame and returns a matplotlib Figure (nothing is shown or saved).

Figures are built without pyplot, so a notebook shows each one once (as the cell's value) and
none is left open in pyplot's registry.

Example::

    fig = phase_breakdown(curl.phases(df))
    fig.savefig("phases.png")
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.figure import Figure as _MplFigure
from matplotlib.lines import Line2D

from ..analysis.curl import PHASES


class Figure(_MplFigure):
    """A matplotlib Figure that a notebook shows as PNG even when pyplot was never imported."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight", dpi=100)
        return buf.getvalue()


#: One colour per outcome, used the same way in every figure.
OUTCOME_COLOURS = {
    "allowed": "#2e7d32",
    "denied": "#ef6c00",
    "reset": "#c62828",
    "closed": "#f9a825",
    "untrusted": "#5d4037",
    "error": "#6a1b9a",
}
PHASE_COLOURS = {"dns": "#90caf9", "connect": "#42a5f5", "tls": "#1565c0", "server": "#ffb74d", "transfer": "#8d6e63"}
#: Lane order of a trace timeline: the request travels top to bottom.
LANES = ("curl", "sidecar", "igw", "igw_http")


def _case_order(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["case"]))


def phase_breakdown(phases: pd.DataFrame, title: str = "Where the time goes (median per case)") -> Figure:
    """Stacked horizontal bars: median milliseconds per phase (DNS, connect, TLS, server, transfer) per case.

    phases: output of :func:`tproxy_nb.analysis.curl.phases`.
    """
    cases = _case_order(phases)
    med = phases.groupby("case", sort=False)[list(PHASES)].median().reindex(cases)
    fig = Figure(figsize=(8, 0.6 * len(cases) + 1.5))
    ax = fig.subplots()
    left = pd.Series(0.0, index=med.index)
    for phase in PHASES:
        ax.barh(med.index, med[phase], left=left, color=PHASE_COLOURS[phase], label=phase)
        left = left + med[phase]
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (median)")
    ax.set_title(title)
    ax.legend(ncol=len(PHASES), loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def timing_distribution(df: pd.DataFrame, title: str = "Total time per request") -> Figure:
    """Each request's total time as a dot, one row per case, coloured by outcome, with the median marked.

    df: output of :func:`tproxy_nb.steps.check.run_cases` (``time_total`` in seconds).
    """
    cases = _case_order(df)
    fig = Figure(figsize=(8, 0.6 * len(cases) + 1.5))
    ax = fig.subplots()
    for i, case in enumerate(cases):
        rows = df[df["case"] == case]
        ms = rows["time_total"].astype(float) * 1000
        jitter = [i + ((k % 7) - 3) * 0.04 for k in range(len(rows))]
        ax.scatter(ms, jitter, s=14, c=[OUTCOME_COLOURS.get(o, "grey") for o in rows["outcome"]], alpha=0.8)
        ax.plot([ms.median()] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(cases)), cases)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (black bar: median)")
    ax.set_title(title)
    handles = [
        Line2D([], [], marker="o", ls="", color=c, label=o)
        for o, c in OUTCOME_COLOURS.items()
        if o in set(df["outcome"])
    ]
    ax.legend(handles=handles, frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def proxied_vs_direct(
    proxied: pd.DataFrame, direct: pd.DataFrame, title: str = "Proxied (service user) vs direct (envoy user)"
) -> Figure:
    """Grouped bars of median total milliseconds per case: through the chain and bypassing it.

    proxied, direct: :func:`tproxy_nb.steps.check.run_cases` as the service user and with ``as_user="envoy"``.
    """
    cases = _case_order(proxied)
    p = proxied.groupby("case", sort=False)["time_total"].median().reindex(cases) * 1000
    d = direct.groupby("case", sort=False)["time_total"].median().reindex(cases) * 1000
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    x = range(len(cases))
    ax.bar([i - 0.2 for i in x], p.values, width=0.4, label="proxied", color="#1565c0")
    ax.bar([i + 0.2 for i in x], d.values, width=0.4, label="direct", color="#9e9e9e")
    ax.set_xticks(list(x), cases)
    ax.set_ylabel("milliseconds (median)")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def medians_by_config(summary: pd.DataFrame, title: str = "Total time per request, by configuration") -> Figure:
    """Grouped bars per case, one bar per configuration: median milliseconds, whiskers from q1 to q3.

    summary: :func:`tproxy_nb.analysis.curl.timing_summary` grouped by ``["config", "case"]``.
    """
    cases, configs = _case_order(summary), list(dict.fromkeys(summary["config"]))
    width = 0.8 / len(configs)
    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    for k, config in enumerate(configs):
        rows = summary[summary["config"] == config].set_index("case").reindex(cases)
        x = [i - 0.4 + width * (k + 0.5) for i in range(len(cases))]
        err = [rows["median_ms"] - rows["q1_ms"], rows["q3_ms"] - rows["median_ms"]]
        ax.bar(x, rows["median_ms"], width=width, yerr=err, capsize=2, label=config)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("milliseconds (median, q1-q3)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="small", ncol=len(configs))
    fig.tight_layout()
    return fig


def timeline(trace: pd.DataFrame, title: str = "One request across the processes") -> Figure:
    """A sequence diagram: one lane (column) per process, one row per event, arrows where the request changes process.

    trace: output of :func:`tproxy_nb.analysis.trace.trace` (columns ``time``, ``process``, ``kind``, ``event``).
    Rows keep the trace's causal order; the left margin gives each event's time in milliseconds from the
    first one (the hops of one request often share a millisecond, so time alone could not order them).
    """
    fig = Figure(figsize=(12, 0.36 * len(trace) + 1.4))
    _draw_timeline(fig.subplots(), trace, title)
    fig.tight_layout()
    return fig


def small_multiples(traces: dict[str, pd.DataFrame], title: str = "Every case, traced") -> Figure:
    """One :func:`timeline` panel per traced request, stacked (a static stand-in for the live explorer).

    traces: ``{label: trace}``; an empty trace gets a panel that says why (``attrs["problem"]``).

    Example: ``small_multiples({c: trace.trace(row, logs) for c, row in last_per_case.iterrows()})``.
    """
    heights = [max(len(t), 2) * 0.36 + 1.2 for t in traces.values()]
    fig = Figure(figsize=(12, sum(heights) + 0.6))
    axes = fig.subplots(len(traces), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (label, t) in zip(axes, traces.items()):
        if t.empty:
            ax.axis("off")
            ax.set_title(f"{label}: not traced ({t.attrs.get('problem', 'no events')})", loc="left")
            continue
        _draw_timeline(ax, t, label)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _draw_timeline(ax, trace: pd.DataFrame, title: str) -> None:
    lanes = [lane for lane in LANES if lane in set(trace["process"])] + sorted(set(trace["process"]) - set(LANES))
    x = {lane: i for i, lane in enumerate(lanes)}
    ms = (trace["time"] - trace["time"].min()).dt.total_seconds() * 1000
    n = len(trace)
    for i in range(len(lanes)):
        ax.axvline(i, color="#d0d0d0", lw=1, zorder=0)
    previous = None
    for k, (t, row) in enumerate(zip(ms, trace.itertuples())):
        bad = row.kind in ("reset", "close") or (row.kind == "verdict" and "denied" in row.event) or "403" in row.event
        colour = "#c62828" if bad else "#1565c0"
        here = (x[row.process], k)
        if previous is not None and previous[0] != here[0]:
            ax.annotate("", xy=here, xytext=previous, arrowprops={"arrowstyle": "->", "color": "#9e9e9e", "lw": 0.8})
        ax.plot(*here, marker="o", color=colour, zorder=3)
        ax.text(len(lanes) - 0.6, k, f"{k + 1}. {row.event}", va="center", fontsize=8, color=colour if bad else "black")
        ax.text(-0.35, k, f"+{t:.1f} ms", va="center", ha="right", fontsize=7, color="#616161")
        previous = here
    ax.set_xticks(range(len(lanes)), lanes)
    ax.xaxis.tick_top()
    ax.set_xlim(-1.1, len(lanes) + 5.5)
    ax.set_ylim(n - 0.5, -0.7)
    ax.set_yticks([])
    for side in ("left", "right", "bottom", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, pad=24)
