"""`make bench`: log parsing throughput, chain latency (proxied vs direct), lab cycles, chain configurations,
first provision at 20 Mbit/s.

Numbers go to build/bench/*.json and a summary to build/bench/summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--repeat", type=int, default=20, help="curl repetitions per case")
    ap.add_argument("--cycles", type=int, default=20, help="lab up -> chain -> down cycles")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Log parsing runs in its own process so its peak-memory reading is its own.
    subprocess.run([sys.executable, "-m", "bench.bench_logs", "--out", str(args.out / "logs.json")], check=True)
    from bench import chain, modes

    chain.main(args.out, repeat=args.repeat, n_cycles=args.cycles)
    modes.main(args.out, repeat=args.repeat)
    from bench import slow_link

    slow_link.main(args.out)
    summary = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json")) if p.stem != "summary"}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"benchmarks written to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
