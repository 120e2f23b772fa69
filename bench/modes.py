"""Chain configurations side by side: direct, redirect+http1, redirect+http2 (and tproxy+http1 once
``interception`` is a setting), each over the four cases.

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


def configurations(settings_type: type = Settings) -> list[Config]:
    """The configurations to compare; tproxy+http1 only where the settings know ``interception``.

    Example: ``[c.name for c in configurations()][:3]`` -> ``["direct", "redirect+http1", "redirect+http2"]``.
    """
    found = [
        Config("direct", {}, direct=True),
        Config("redirect+http1", {"tunnel": "http1"}),
        Config("redirect+http2", {"tunnel": "http2"}),
    ]
    if "interception" in {f.name for f in dataclasses.fields(settings_type)}:
        found.append(Config("tproxy+http1", {"interception": "tproxy", "tunnel": "http1"}))
    return found


def measure(host, s: Settings, config: Config, repeat: int) -> tuple[pd.DataFrame, list[dict]]:
    """Every case ``repeat`` times in a row; curl's rows, and per case the gateways' connections per request."""
    user = s.envoy.user if config.direct else s.service.user
    rows, pools = [], []
    for case in curl.cases(s):
        expected = "allowed" if config.direct else case.expected
        before = envoy_proc.gateway_counts(host, s)
        for i in range(repeat):
            rec = check.run_case(host, curl.Case(case.name, case.url, expected), user)
            rows.append({**rec, "run": i, "config": config.name})
        gateways = pool.per_gateway(before, envoy_proc.gateway_counts(host, s))
        pools.append(
            {
                "config": config.name,
                "case": case.name,
                **{
                    f"{g}_connections_per_request": round(c / repeat, 3)
                    for g, c in gateways[["gateway", "connections"]].values
                },
            }
        )
    return curl.to_frame(rows), pools


def run(repeat: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bring the chain up once per configuration on the lab and measure it; the chain is down afterwards."""
    host = lab.up().host_obj()
    current = Settings()
    frames, pools = [], []
    try:
        chain.up(host, current, guard_seconds=None)
        for config in configurations():
            wanted = current.replace(**config.changes)
            if wanted != current:
                # A change of interception touches the firewall: start from nothing rather than half-switch.
                if getattr(wanted, "interception", None) != getattr(current, "interception", None):
                    chain.down(host, current)
                else:
                    envoy_proc.stop(host, current)
                chain.up(host, wanted, guard_seconds=None)
                current = wanted
            df, p = measure(host, current, config, repeat)
            print(f"{config.name}: outcomes {df.groupby('case', sort=False)['outcome'].agg(set).to_dict()}")
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
    return summary.merge(outcomes.rename("outcomes").reset_index()).merge(pools)


def main(out_dir: Path, repeat: int = 20) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    df, pools = run(repeat)
    t = table(df, pools)
    out = {"repeat": repeat, "configs": [c.name for c in configurations()], "rows": t.to_dict(orient="records")}
    (out_dir / "modes.json").write_text(json.dumps(out, indent=2, default=str))
    plots.medians_by_config(t).savefig(out_dir / "modes.png", dpi=100, bbox_inches="tight")
    print(t.drop(columns=["q1_ms", "q3_ms"]).to_string(index=False))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.modes")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    main(args.out, repeat=args.repeat)
