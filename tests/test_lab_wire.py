"""The reset on the wire, on the lab: kernel counters and packets for each request (tls_deny: reset)."""

import pytest

from tproxy_nb.analysis import packets
from tproxy_nb.steps import check, envoy_proc

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def captured(host, chain):
    return check.capture_cases(host, chain, repeat=2, progress=False)


def test_the_abort_counter_counts_exactly_the_denied_https_requests(captured):
    df, _pk = captured
    per_case = df.groupby("case")["TcpExtTCPAbortOnClose"].sum()
    assert per_case["https denied"] == 2, df[["case", "TcpExtTCPAbortOnClose", "TcpExtTCPAbortOnData"]]
    assert per_case.drop("https denied").eq(0).all(), per_case


def test_the_denied_https_packets_end_in_rst_from_the_proxy_the_allowed_in_fin(captured):
    _df, pk = captured
    ends = packets.endings(pk)
    assert len(ends) == 8, pk.to_string()
    denied = ends[ends["case"] == "https denied"]
    assert (denied["ending"] == "RST").all() and (denied["by"] == "proxy").all(), ends
    others = ends[ends["case"] != "https denied"]
    assert (others["ending"] == "FIN").all() and others["rst"].eq(0).all(), ends
    # The ClientHello went out before the RST: the app spoke first, then was cut off.
    first = pk[(pk["case"] == "https denied") & (pk["run"] == 0)]
    assert first[first["length"] > 0].index.min() < first[first["flags"].str.contains("R")].index.min()


def test_the_sidecar_log_says_the_gateway_refused_the_tunnel(host, chain, captured):
    records = [r for r in envoy_proc.logs(host, chain, "sidecar", access=True).splitlines() if "www.lyft.com" in r]
    tls = [r for r in records if '"requested_server_name":"www.lyft.com"' in r.replace(" ", "")]
    assert tls and all("tunnel_response:403" in r for r in tls), records[-3:]
