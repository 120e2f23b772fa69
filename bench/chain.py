"""Chain benchmarks on the lab: per-case medians proxied vs direct, and lab cycles with leftovers.

Run by ``make bench``; writes ``build/bench/chain.json`` and ``build/bench/cycles.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tproxy_nb import lab
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check


def proxied_vs_direct(repeat: int = 20) -> dict:
    """Median total time per case through the chain (service user) and direct (envoy user)."""
    s = Settings()
    host = lab.up().host_obj()
    try:
        chain.up(host, s, guard_seconds=None)
        proxied = check.run_cases(host, s, repeat=repeat)
        direct = check.run_cases(host, s, repeat=repeat, as_user="envoy")
    finally:
        chain.down(host, s)
        host.close()
    out = {"repeat": repeat, "cases": {}}
    for case in proxied["case"].unique():
        p = float(proxied.loc[proxied["case"] == case, "time_total"].median()) * 1000
        d = float(direct.loc[direct["case"] == case, "time_total"].median()) * 1000
        out["cases"][case] = {
            "proxied_median_ms": round(p, 3),
            "direct_median_ms": round(d, 3),
            "ratio": round(p / d, 2) if d else None,
            "added_ms": round(p - d, 3),
            "outcomes": proxied.loc[proxied["case"] == case, "outcome"].value_counts().to_dict(),
        }
    return out


def cycles(n: int = 20) -> dict:
    """``n`` cycles of lab up -> full chain -> lab down; time per cycle and what was left behind."""
    s = Settings()
    times, left = [], []
    for i in range(n):
        t0 = time.monotonic()
        host = lab.up().host_obj()
        try:
            chain.up(host, s, guard_seconds=None)
            outcomes = check.run_cases(host, s, progress=False)["outcome"].tolist()
        finally:
            host.close()
            lab.down(s)
        times.append(time.monotonic() - t0)
        remaining = lab.leftovers(s)
        left.append(remaining)
        print(f"cycle {i + 1}/{n}: {times[-1]:.1f} s, outcomes {outcomes}, leftovers {remaining or 'none'}")
    return {
        "cycles": n,
        "seconds_per_cycle": [round(t, 2) for t in times],
        "median_s": round(sorted(times)[n // 2], 2),
        "leftovers": left,
        "clean": all(not x for x in left),
    }


def main(out_dir: Path, repeat: int = 20, n_cycles: int = 20) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    chain = proxied_vs_direct(repeat)
    (out_dir / "chain.json").write_text(json.dumps(chain, indent=2))
    print(json.dumps(chain, indent=2))
    cyc = cycles(n_cycles)
    (out_dir / "cycles.json").write_text(json.dumps(cyc, indent=2))
    print(f"{n_cycles} cycles: median {cyc['median_s']} s, clean={cyc['clean']}")
