"""Chain configurations side by side: direct, redirect+http1, redirect+http2 and tproxy+http1, each over
the four cases.

Per configuration and case: median and IQR of curl's total time, and the connections each gateway took per
request (deltas of its admin counters). Run by ``make bench``; writes ``build/bench/modes.json`` and
``build/bench/modes.png``. Alone: ``python -m bench.modes --repeat 5``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

from tproxy_nb import lab
from tproxy_nb.analysis import curl, pool
from tproxy_nb.present import plots
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check, envoy_proc


@dataclasses.dataclass(frozen=True)
class Config:
    """One way the requests travel: the settings changed from the defaults, and who makes the requests."""

    name: str
    changes: dict
    direct: bool = False  # as the envoy user: its traffic bypasses the chain


#: The configurations compared, in the table's column order.
CONFIGS = (
    Config("direct", {}, direct=True),
    Config("redirect+http1", {"tunnel": "http1"}),
    Config("redirect+http2", {"tunnel": "http2"}),
    Config("tproxy+http1", {"interception": "tproxy", "tunnel": "http1"}),
)


def measure(host, s: Settings, config: Config, repeat: int) -> tuple[pd.DataFrame, list[dict]]:
    """Every case ``repeat`` times in a row; curl's rows, and per case the connections each gateway took."""
    user = s.envoy.user if config.direct else s.service.user
    rows, pools = [], []
    for case in curl.cases(s):
        expected = "allowed" if config.direct else case.expected
        before = envoy_proc.gateway_counts(host, s)
        for i in range(repeat):
            rec = check.run_case(host, curl.Case(case.name, case.url, expected), user)
            rows.append({**rec, "run": i, "config": config.name})
        gateways = pool.per_gateway(before, envoy_proc.gateway_counts(host, s))
        pools.extend(
            {"config": config.name, "case": case.name, "gateway": g, "connections": c, "curl_requests": repeat}
            for g, c in gateways[["gateway", "connections"]].values
        )
    return curl.to_frame(rows), pools


def switch(host, current: Settings, wanted: Settings) -> Settings:
    """Bring the running chain from ``current`` to ``wanted``, restarting as little as the change needs."""
    if wanted.interception != current.interception:
        current = chain.switch_interception(host, current, wanted.interception, guard_seconds=None)[0]
    changed = {k: getattr(wanted, k) for k in chain.SIDECAR_SETTINGS if getattr(current, k) != getattr(wanted, k)}
    if changed:
        current = chain.switch_sidecar(host, current, **changed)[0]
    if current != wanted:
        raise ValueError(f"the bench switches only interception and {', '.join(chain.SIDECAR_SETTINGS)}")
    return current


def run(repeat: int, rounds: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measure every configuration on the lab, in ``rounds`` interleaved blocks; the chain is down afterwards.

    Interleaving spreads whatever else the machine does over all configurations alike.
    """
    host = lab.up().host_obj()
    current = Settings()
    frames, pools = [], []
    try:
        chain.up(host, current, guard_seconds=None)
        for r in range(rounds):
            n = repeat // rounds + (1 if r < repeat % rounds else 0)
            for config in CONFIGS if n else []:
                if not config.direct:
                    current = switch(host, current, Settings().replace(**config.changes))
                df, p = measure(host, current, config, n)
                frames.append(df)
                pools.extend(p)
    finally:
        chain.down(host, current)
        host.close()
    return pd.concat(frames, ignore_index=True), pd.DataFrame(pools)


def table(df: pd.DataFrame, pools: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and case: timings, outcomes, connections per request to each gateway."""
    summary = curl.timing_summary(df, ["config", "case"])
    outcomes = df.groupby(["config", "case"], sort=False)["outcome"].agg(lambda o: o.value_counts().to_dict())
    per = pools.groupby(["config", "case", "gateway"], sort=False)[["connections", "curl_requests"]].sum()
    ratio = (per["connections"] / per["curl_requests"]).round(3).unstack("gateway")
    ratio.columns = [f"{g}_connections_per_request" for g in ratio.columns]
    return summary.merge(outcomes.rename("outcomes").reset_index()).merge(ratio.reset_index())


def main(out_dir: Path, repeat: int = 20, rounds: int = 4) -> dict:
    """Measure, write ``modes.json`` and ``modes.png`` to ``out_dir``, print the table; return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df, pools = run(repeat, rounds)
    t = table(df, pools)
    out = {
        "repeat": repeat,
        "rounds": rounds,
        "configs": [c.name for c in CONFIGS],
        "rows": t.to_dict(orient="records"),
    }
    (out_dir / "modes.json").write_text(json.dumps(out, indent=2, default=str))
    plots.medians_by_config(t).savefig(out_dir / "modes.png", dpi=100, bbox_inches="tight")
    print(t.drop(columns=["q1_ms", "q3_ms"]).to_string(index=False))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.modes")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--repeat", type=int, default=20, help="requests per configuration and case")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved blocks the repetitions are split into")
    args = ap.parse_args()
    main(args.out, repeat=args.repeat, rounds=args.rounds)
