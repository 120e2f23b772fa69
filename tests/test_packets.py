"""Packets: tcpdump text into a DataFrame, labelled by request, and how each connection ended (pure)."""

import pandas as pd

from tproxy_nb.analysis import packets

# tcpdump -nn -tt on the lab's loopback (tls_deny: reset): the denied HTTPS request, then an allowed HTTP one.
TEXT = """\
1795929985.298000000 IP 198.18.1.1.37648 > 127.0.0.1.12000: Flags [S], seq 1, win 65495, options [mss 65495], length 0
1795929985.300014973 IP 198.18.1.11.443 > 198.18.1.1.37648: Flags [S.], seq 2, ack 2, win 65483, length 0
1795929985.300029039 IP 198.18.1.1.37648 > 127.0.0.1.12000: Flags [.], ack 1, win 512, length 0
1795929985.301668882 IP 198.18.1.1.37648 > 127.0.0.1.12000: Flags [P.], seq 1:518, ack 1, win 512, length 517
1795929985.301681995 IP 198.18.1.11.443 > 198.18.1.1.37648: Flags [.], ack 518, win 508, length 0
1795929985.302860022 IP 198.18.1.11.443 > 198.18.1.1.37648: Flags [R.], seq 1, ack 518, win 512, length 0
1795929985.456042051 IP 198.18.1.1.54180 > 127.0.0.1.12003: Flags [S], seq 9, win 65495, length 0
1795929985.456057072 IP 198.18.1.10.80 > 198.18.1.1.54180: Flags [S.], seq 7, ack 10, win 65483, length 0
1795929985.459671021 IP 198.18.1.1.54180 > 127.0.0.1.12003: Flags [F.], seq 79, ack 218, win 512, length 0
1795929985.459774017 IP 198.18.1.10.80 > 198.18.1.1.54180: Flags [F.], seq 218, ack 80, win 512, length 0
reading from file /opt/tproxy-nb/run/capture.pcap, link-type EN10MB (Ethernet)
1795929985.5 IP 127.0.0.1.9901 > 127.0.0.1.50000: truncated
"""

REQUESTS = pd.DataFrame(
    [{"case": "https denied", "run": 0, "local_port": 37648}, {"case": "http allowed", "run": 1, "local_port": 54180}]
)


def test_tcpdump_lines_become_rows_and_other_lines_are_skipped():
    df = packets.parse_tcpdump(TEXT)
    assert len(df) == 10
    assert list(df.columns) == ["time", "source", "destination", "flags", "length"]
    assert df.loc[3, "length"] == 517 and df.loc[5, "flags"] == "R." and df.loc[5, "source"] == "198.18.1.11.443"
    assert str(df["time"].dt.tz) == "UTC"
    assert packets.parse_tcpdump("").empty


def test_packets_are_labelled_by_curls_port_and_endings_say_who_cut_the_connection():
    pk = packets.label_cases(packets.parse_tcpdump(TEXT), REQUESTS)
    assert list(pk.columns) == list(packets.COLUMNS)
    assert pk["case"].tolist() == ["https denied"] * 6 + ["http allowed"] * 4
    ends = packets.endings(pk).set_index("case")
    assert ends.loc["https denied", "ending"] == "RST" and ends.loc["https denied", "by"] == "proxy"
    assert ends.loc["http allowed", "ending"] == "FIN" and ends.loc["http allowed", "by"] == "app"
    assert packets.flag_names("R.") == "RST ACK"
