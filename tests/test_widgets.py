"""The log explorer: its filter is pure; the widget builds without a running kernel."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from tproxy_nb import curl, trace, widgets  # noqa: E402

DATA = Path(__file__).parent / "data" / "chain"


def _logs():
    return trace.parse_all({n: {"debug": (DATA / f"{n}.log").read_text(), "access": (DATA / f"{n}.access.log").read_text()}
                            for n in ("sidecar", "igw", "igw_http")})


def test_filter_narrows_to_the_rbac_deny():
    df = _logs()["igw"]["debug"]
    hits = widgets.filter_records(df, levels=["debug"], logger="rbac", text="ENFORCED DENIED")
    assert len(hits) == 1 and "enforced denied" in hits.iloc[0]["message"]
    assert len(widgets.filter_records(df, connection=3)) == (df["connection_id"] == 3).sum()
    assert len(widgets.filter_records(df, limit=5)) == 5


def test_explorer_offers_every_process_and_traces_a_request():
    results = curl.to_frame(json.loads((DATA / "curl.json").read_text()))
    box = widgets.log_explorer(_logs(), results)
    records, tracer = box.children
    process = records.children[0].children[0]
    assert list(process.options) == ["sidecar", "igw", "igw_http"]
    picker = tracer.children[0]
    assert any("https denied" in o and "reset" in o for o in picker.options)
    assert isinstance(results, pd.DataFrame)
