"""The log explorer: its filter is pure; the widget builds without a running kernel."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from tproxy_nb.analysis import curl, trace  # noqa: E402
from tproxy_nb.present import widgets  # noqa: E402

DATA = Path(__file__).parent / "data" / "chain"


def _logs():
    return trace.parse_all(
        {
            n: {"debug": (DATA / f"{n}.log").read_text(), "access": (DATA / f"{n}.access.log").read_text()}
            for n in ("sidecar", "igw", "igw_http")
        }
    )


def test_filter_narrows_to_the_rbac_deny():
    df = _logs()["igw"]["debug"]
    hits = widgets.filter_records(df, levels=["debug"], logger="rbac", text="ENFORCED DENIED")
    assert len(hits) == 1 and "enforced denied" in hits.iloc[0]["message"]
    assert len(widgets.filter_records(df, connection=3)) == (df["connection_id"] == 3).sum()
    assert len(widgets.filter_records(df, limit=5)) == 5


def test_explorer_controls_drive_the_filter_and_offer_every_request():
    results = curl.to_frame(json.loads((DATA / "curl.json").read_text()))
    logs = _logs()
    box = widgets.log_explorer(logs, results)
    records, tracer = box.children
    process, logger, connection = records.children[0].children
    levels, text = records.children[1].children
    count = records.children[2]
    assert list(process.options) == ["sidecar", "igw", "igw_http"]
    process.value = "igw"
    assert "rbac" in logger.options and 3 in connection.options
    assert f"of {len(logs['igw']['debug'])} records" in count.value
    text.value = "enforced denied"
    assert count.value.startswith("<b>1</b>")
    picker = tracer.children[0]
    assert len(picker.options) == len(results)
    assert any("https denied" in o and "reset" in o for o in picker.options)
