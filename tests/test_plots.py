"""Figures carry the data they claim to (checked on the artists, not pixels)."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from tproxy_nb.analysis import curl  # noqa: E402
from tproxy_nb.present import plots  # noqa: E402

CASES = ["http allowed", "http denied", "https allowed", "https denied"]


def _runs(scale: float, outcomes=("allowed", "denied", "allowed", "reset"), n=3):
    rows = []
    for run in range(n):
        for i, (case, outcome) in enumerate(zip(CASES, outcomes)):
            base = scale * (i + 1) / 1000
            rows.append(
                {
                    "case": case,
                    "run": run,
                    "outcome": outcome,
                    "time_namelookup": base * 0.1,
                    "time_connect": base * 0.2,
                    "time_appconnect": base * 0.5 if "https" in case else 0.0,
                    "time_pretransfer": base * 0.6,
                    "time_starttransfer": base * 0.9,
                    "time_total": base,
                }
            )
    return curl.to_frame(rows)


def test_phase_breakdown_stacks_every_phase_for_every_case():
    fig = plots.phase_breakdown(curl.phases(_runs(10)))
    ax = fig.axes[0]
    # Worked out by hand from _runs (cases take 10, 20, 30, 40 ms; TLS only for HTTPS), in milliseconds:
    expected = {
        "dns": [1, 2, 3, 4],
        "connect": [1, 2, 3, 4],
        "tls": [0, 0, 9, 12],
        "server": [3, 6, 9, 12],
        "transfer": [1, 2, 3, 4],
    }
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == CASES
    assert [p.get_width() for p in ax.patches] == pytest.approx(sum(expected.values(), []))
    # Stacked: each case's last bar ends at its total less the time between connect (or TLS) done and
    # pretransfer, which httpstat's phases do not count.
    assert [p.get_x() + p.get_width() for p in ax.patches[-4:]] == pytest.approx([6, 12, 27, 36])


def test_timing_distribution_has_a_dot_per_request():
    df = _runs(10)
    fig = plots.timing_distribution(df)
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(df)
    assert [t.get_text() for t in ax.get_yticklabels()] == CASES
    assert ax.get_xscale() == "log"  # 3 ms of HTTP beside 50 ms of HTTPS, both readable


def test_proxied_vs_direct_gives_each_case_its_own_axis_and_states_the_cost():
    proxied, direct = _runs(10), _runs(5, outcomes=("allowed",) * 4)
    fig = plots.proxied_vs_direct(proxied, direct)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == CASES
    # Cases take 10, 20, 30, 40 ms proxied and 5, 10, 15, 20 ms direct: the cost is 5, 10, 15, 20 ms.
    assert [ax.get_title().split("\n")[1] for ax in panels] == [
        f"+{ms:.1f} ms (IQR {ms:.1f} to {ms:.1f})" for ms in (5, 10, 15, 20)
    ]
    for ax in panels:
        assert sum(len(c.get_offsets()) for c in ax.collections) == 6  # 3 direct + 3 proxied requests
    # Own axes: the first HTTP case is not squeezed onto the HTTPS cases' scale.
    assert panels[0].get_xlim()[1] < panels[3].get_xlim()[1] / 2


def test_every_outcome_has_its_own_colour():
    from tproxy_nb.analysis.curl import OUTCOMES
    from tproxy_nb.present.plots import OUTCOME_COLOURS

    assert set(OUTCOME_COLOURS) == set(OUTCOMES)
    assert len(set(OUTCOME_COLOURS.values())) == len(OUTCOMES)
