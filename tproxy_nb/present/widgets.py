"""Log explorer: ipywidgets controls wired to the parsing, trace and plot functions (no logic of its own).

Example (in a notebook)::

    logs = envoy_proc.fetch_logs(host, settings)
    widgets.log_explorer(logs, results)
"""

from __future__ import annotations

import pandas as pd

from ..analysis import trace as tracing
from . import plots

ALL = "(all)"
SHOWN_COLUMNS = ["line_no", "timestamp", "thread", "level", "logger", "connection_id", "stream_id", "message"]


def filter_records(
    df: pd.DataFrame,
    levels=None,
    logger: str | None = None,
    connection: int | None = None,
    text: str = "",
    limit: int = 200,
) -> pd.DataFrame:
    """The records that pass every filter (pure; the widget calls it on each change).

    levels: keep these levels (None: all). logger: one logger name (None: all).
    connection: one connection id (None: all). text: case-insensitive substring of the message.
    limit: at most this many rows (the first ones).

    Example: ``filter_records(df, levels=["debug"], logger="rbac", text="denied")``.
    """
    mask = pd.Series(True, index=df.index)
    if levels:
        mask &= df["level"].isin(list(levels))
    if logger:
        mask &= df["logger"] == logger
    if connection is not None:
        mask &= df["connection_id"] == connection
    if text:
        mask &= df["message"].str.contains(text, case=False, regex=False, na=False)
    return df.loc[mask, SHOWN_COLUMNS].head(limit)


def _request_label(row: pd.Series) -> str:
    return f"{row['case']} #{row.get('run', 0)} → {row['outcome']}"


def log_explorer(logs: dict[str, dict], results: pd.DataFrame | None = None):
    """An explorer: pick process, levels, logger, connection, filter text; and trace a request.

    logs: as from :func:`tproxy_nb.steps.envoy_proc.fetch_logs` / :func:`~tproxy_nb.analysis.trace.parse_all`.
    results: curl results (:func:`tproxy_nb.steps.check.run_cases`) to offer in the trace picker.
    """
    import ipywidgets as w
    from IPython.display import display

    names = list(logs)
    process = w.Dropdown(options=names, value=names[0], description="process")
    levels = w.SelectMultiple(options=[], description="levels", rows=4)
    logger = w.Dropdown(options=[ALL], value=ALL, description="logger")
    connection = w.Dropdown(options=[ALL], value=ALL, description="connection")
    text = w.Text(placeholder="text in message", description="filter", continuous_update=False)
    records = w.Output(layout=w.Layout(max_height="420px", overflow="auto"))
    count = w.HTML()

    def debug() -> pd.DataFrame:
        return logs[process.value]["debug"]

    def refill(_=None) -> None:
        df = debug()
        known = df["level"].dropna().unique().tolist()
        levels.options = known
        levels.value = tuple(known)
        logger.options = [ALL] + sorted(df["logger"].dropna().unique().tolist())
        logger.value = ALL
        connection.options = [ALL] + [int(c) for c in sorted(df["connection_id"].dropna().unique())]
        connection.value = ALL
        show()

    def show(_=None) -> None:
        df = debug()
        shown = filter_records(
            df,
            levels=levels.value,
            logger=None if logger.value == ALL else logger.value,
            connection=None if connection.value == ALL else connection.value,
            text=text.value,
        )
        count.value = f"<b>{len(shown)}</b> of {len(df)} records shown (first 200 at most)"
        records.clear_output()
        with records:
            display(
                shown.style.hide(axis="index").set_properties(
                    subset=["message"], **{"white-space": "pre-wrap", "text-align": "left"}
                )
            )

    process.observe(refill, names="value")
    for control in (levels, logger, connection, text):
        control.observe(show, names="value")
    tabs = [w.VBox([w.HBox([process, logger, connection]), w.HBox([levels, text]), count, records])]
    titles = ["records"]

    if results is not None and len(results):
        picks = {_request_label(r): i for i, r in results.iterrows()}
        request = w.Dropdown(options=list(picks), description="request")
        traced = w.Output()

        def show_trace(_=None) -> None:
            t = tracing.trace(results.loc[picks[request.value]], logs)
            traced.clear_output()
            with traced:
                if t.empty:
                    print(t.attrs.get("problem", "nothing to trace"))
                    return
                display(t[["time", "process", "connection_id", "kind", "event", "link"]].style.hide(axis="index"))
                display(plots.timeline(t, title=request.value))

        request.observe(show_trace, names="value")
        tabs.append(w.VBox([request, traced]))
        titles.append("trace a request")
        show_trace()

    refill()
    box = w.Tab(children=tabs)
    for i, title in enumerate(titles):
        box.set_title(i, title)
    return box
