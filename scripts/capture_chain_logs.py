#!/usr/bin/env python3
"""Capture the chain's logs for one run of the four cases, scrubbed, into tests/data/chain/.

Regenerates the fixtures that the trace and log-analysis tests read. Needs root (the lab).

    .venv/bin/python scripts/capture_chain_logs.py [--out tests/data/chain]

It brings the lab up, provisions the chain, starts the Envoys, runs each case once as the
service user, keeps only what the Envoys logged during the requests, checks that no key
material is in it, and removes the chain again (the lab stays up).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tproxy_nb import lab  # noqa: E402
from tproxy_nb.render import envoy  # noqa: E402
from tproxy_nb.settings import Settings  # noqa: E402
from tproxy_nb.steps import chain, check  # noqa: E402


def log_sizes(host, s: Settings) -> dict[str, int]:
    sizes = {}
    for name in envoy.NAMES:
        for access in (False, True):
            path = envoy.log_path(s, name, access=access)
            r = host.run(["stat", "-c", "%s", path], sudo=True, check=False)
            sizes[path] = int(r.stdout) if r.ok else 0
    return sizes


def tail_from(host, path: str, offset: int) -> str:
    return host.run(["tail", "-c", f"+{offset + 1}", path], sudo=True).stdout


def scrub(text: str) -> str:
    if "PRIVATE KEY" in text:
        raise SystemExit("refusing to write a capture that contains key material")
    return text.replace(socket.gethostname(), "lab-host")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "chain")
    args = ap.parse_args()
    s = Settings()
    host = lab.up().host_obj()
    try:
        chain.down(host, s)  # fresh Envoys: their logs hold nothing but this run
        chain.up(host, s, guard_seconds=None)
        # Wait out start-up logging (flushed every FLUSH_INTERVAL_MS) so the capture holds only the requests.
        host.run(f"sleep {3 * envoy.FLUSH_INTERVAL_MS / 1000}")
        before = log_sizes(host, s)
        results = check.run_cases(host, s, progress=False)
        # Let the Envoys finish logging the closes before reading.
        host.run(f"sleep {5 * envoy.FLUSH_INTERVAL_MS / 1000}")
        args.out.mkdir(parents=True, exist_ok=True)
        for path, offset in before.items():
            name = Path(path).name
            (args.out / name).write_text(scrub(tail_from(host, path, offset)))
        records = json.loads(results.drop(columns=["body"]).to_json(orient="records"))
        (args.out / "curl.json").write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {sorted(p.name for p in args.out.iterdir())} to {args.out}")
        print(results[["case", "outcome", "http_code", "exit_code", "local_port"]].to_string(index=False))
    finally:
        chain.down(host, s)
        host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
