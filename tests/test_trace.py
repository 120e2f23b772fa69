"""The trace across curl, sidecar and gateway, on logs captured from the lab (scripts/capture_chain_logs.py)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tproxy_nb.analysis import trace
from tproxy_nb.present import plots

DATA = Path(__file__).parent / "data" / "chain"


@pytest.fixture(scope="module")
def logs():
    texts = {
        n: {"debug": (DATA / f"{n}.log").read_text(), "access": (DATA / f"{n}.access.log").read_text()}
        for n in ("sidecar", "igw", "igw_http")
    }
    return trace.parse_all(texts)


@pytest.fixture(scope="module")
def requests():
    return {r["case"]: r for r in json.loads((DATA / "curl.json").read_text())}


def _first(t, **where):
    mask = pd.Series(True, index=t.index)
    for col, val in where.items():
        mask &= t[col].astype(str).str.contains(val, regex=False) if col == "event" else (t[col] == val)
    hits = t.index[mask]
    assert len(hits), f"no event with {where}:\n{t[['process', 'kind', 'event']]}"
    return hits[0]


def test_https_denied_is_told_in_causal_order(logs, requests):
    t = trace.trace(requests["https denied"], logs)
    steps = [
        _first(t, process="curl", event="ClientHello"),
        _first(t, process="sidecar", event="sends CONNECT"),
        _first(t, process="igw", kind="verdict", event="denied"),
        _first(t, process="igw", kind="response", event="403 with connection: close"),
        _first(t, process="sidecar", event="closes curl's connection"),
        _first(t, process="curl", kind="reset"),
    ]
    assert steps == sorted(steps)
    assert "Connection reset by peer" in t.loc[steps[-1], "event"]
    # The denied CONNECT leaves no upstream address in the sidecar's access log: the hop is inferred, and says so.
    assert t.loc[t["process"] == "igw", "link"].str.startswith("inferred").all()


def test_allowed_cases_link_exactly_and_reach_the_right_gateway(logs, requests):
    http = trace.trace(requests["http allowed"], logs)
    assert set(http["process"]) == {"curl", "sidecar", "igw_http"}
    assert http.loc[http["process"] == "igw_http", "link"].str.startswith("exact").all()
    assert "RBAC allowed" in " ".join(http["event"])
    https = trace.trace(requests["https allowed"], logs)
    assert set(https["process"]) == {"curl", "sidecar", "igw"}
    assert "CONNECT www.google.com:443" in " ".join(https["event"])


def test_http_denied_shows_the_403_reaching_curl(logs, requests):
    t = trace.trace(requests["http denied"], logs)
    answered = _first(t, process="sidecar", event="answers the client: 403")
    assert (
        _first(t, process="igw_http", kind="verdict", event="denied")
        < answered
        < _first(t, process="curl", event="sees HTTP 403")
    )


def test_a_request_the_proxy_never_saw_gives_an_empty_trace_with_a_reason(logs, requests):
    row = dict(requests["http allowed"], local_port=1)
    t = trace.trace(row, logs)
    assert t.empty and "local port 1" in t.attrs["problem"]


def test_timeline_has_one_lane_per_process_and_every_event(logs, requests):
    t = trace.trace(requests["https denied"], logs)
    fig = plots.timeline(t)
    ax = fig.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["curl", "sidecar", "igw"]
    markers = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(markers) == len(t)
    assert any("Connection reset by peer" in text.get_text() for text in ax.texts)
