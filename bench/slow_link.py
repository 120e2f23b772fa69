"""First provision of a fresh lab host through a 20 Mbit/s link (goal: 20 s or less).

A token-bucket filter on both ends of the veth between this machine and the lab host
(``tc qdisc add dev <veth> root tbf rate 20mbit burst 32kbit latency 400ms``) makes the link as slow as
an uplink to EC2; the lab is taken down and brought up again (a fresh host: no accounts, no files, no
binary), and the first provision (``chain.up`` through ``provision``, what ``tproxy-nb provision`` does) is
timed, then the whole ``chain.up`` (rules loaded, Envoys started and ready) beside it. Provisioning
uploads the Envoy binary gzip-compressed (``auto``: the lab reaches no package index). The compressed
binary is made before the clock starts (it is cached on this machine after the first run anyway). The
filters are removed afterwards, also on failure.

Run by ``make bench``; alone: ``python -m bench.slow_link``. Writes ``build/bench/slow_link.json``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tproxy_nb import lab
from tproxy_nb.lab import core
from tproxy_nb.settings import Settings
from tproxy_nb.steps import chain, check, envoy_binary, facts

RATE = "20mbit"
GOAL_S = 20.0
#: Both ends of the link the upload crosses: (network namespace or None for this one, device).
ENDS = ((None, core.ROOT_VETH), (core.HOST_NS, core.HOST_VETH))


def _tc(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["tc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


def shape(rate: str = RATE) -> None:
    """Put the token-bucket filter on both ends of the lab host's veth."""
    for ns, dev in ENDS:
        _tc(ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")


def unshape() -> None:
    """Remove the filters (nothing to remove is fine: the veth may be gone with the lab)."""
    for ns, dev in ENDS:
        _tc(ns, "qdisc", "del", "dev", dev, "root", check=False)


def sent_bytes(ns: str | None, dev: str) -> int:
    """Bytes the device's root qdisc has sent (``tc -s qdisc show``)."""
    m = re.search(r"Sent (\d+) bytes", _tc(ns, "-s", "qdisc", "show", "dev", dev).stdout)
    return int(m[1]) if m else 0


def _bits_per_second(rate: str) -> float:
    """``"20mbit"`` -> ``20e6`` (tc's decimal units)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(k|m|g)?bit", rate)
    if m is None:
        raise ValueError(f"rate must look like 20mbit, not {rate!r}")
    return float(m[1]) * {"k": 1e3, "m": 1e6, "g": 1e9, None: 1.0}[m[2]]


def first_provision(rate: str = RATE) -> dict:
    """Fresh lab, shaped link, one timed ``chain.up``; the four outcomes checked afterwards (not timed)."""
    s = Settings()
    lab.down(s)
    info = lab.up()
    local = facts.local_file(envoy_binary.local_envoy_binary()) if envoy_binary.local_tag() else None
    gz = envoy_binary.cache_path(local) if local else None
    if local and gz and not gz.is_file():
        envoy_binary.compress(local.path, gz)
    host = info.host_obj()
    try:
        shape(rate)
        t0 = time.monotonic()
        plans = chain.up(host, s, through="provision", guard_seconds=None)
        seconds = time.monotonic() - t0
        # Then the rest of the chain (rules, Envoys started and ready), reported beside it.
        chain.up(host, s, guard_seconds=None)
        whole = time.monotonic() - t0
        shaped = sent_bytes(*ENDS[0])
        outcomes = check.run_cases(host, s, progress=False)["outcome"].tolist()
    finally:
        unshape()
        try:
            chain.down(host, s)
        finally:
            host.close()
    binary = next(p for p in plans if p.step == "envoy binary")
    gz_bytes = gz.stat().st_size if gz and gz.is_file() else None
    # What the compressed binary alone needs at the shaped rate; the rest is the other steps' round trips.
    line_rate_s = round(gz_bytes * 8 / _bits_per_second(rate), 2) if gz_bytes else None
    return {
        "rate": rate,
        "seconds": round(seconds, 2),
        "whole_chain_up_s": round(whole, 2),
        "goal_s": GOAL_S,
        "met": seconds <= GOAL_S,
        "envoy_binary": binary.notes[0] if binary.notes else "",
        "binary_bytes": local.size if local else None,
        "uploaded_gz_bytes": gz_bytes,
        "gz_transfer_s_at_rate": line_rate_s,
        "everything_else_s": round(seconds - line_rate_s, 2) if line_rate_s else None,
        "bytes_through_the_shaped_link": shaped,
        "outcomes": outcomes,
    }


def main(out_dir: Path, rate: str = RATE) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = first_provision(rate)
    (out_dir / "slow_link.json").write_text(json.dumps(result, indent=2))
    verdict = "within" if result["met"] else "over"
    print(
        f"first provision through {rate}: {result['seconds']} s ({verdict} the {GOAL_S:g} s goal); "
        f"whole chain up: {result['whole_chain_up_s']} s"
    )
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/bench"))
