"""Benchmark ``tproxy_nb.logs.parse_envoy_log`` on a large, realistic Envoy debug log.

The log is the worker traffic of a real Envoy 1.40 capture
(``tests/data/logs/envoy-1.40-default.log``) repeated with fresh connection
ids, random 64-bit stream ids, advancing timestamps and rotating worker
threads, until it is ``--mb`` megabytes (default 200) or has ``--lines`` lines. Reported, best of ``--repeat``:

* ``bare_read_s``: ``for line in open(path): pass``, the floor for any parser;
* ``parse_s`` and ``ratio`` (parse / bare read), ``lines_per_s``;
* ``peak_mem_bytes``: how much one parse, the frame it returns included, raises
  the peak resident memory of a fresh process (``VmHWM`` after the parse minus
  before it: Python's, numpy's and Arrow's memory alike), and
  ``mem_ratio`` (peak / file size);
* ``goals``: >= 1 M lines/s, <= 3x a bare read, peak <= 2x the file;
* with ``--regex``, ``regex_parse_s``: the same parse with ``fast=False``.

Usage: ``python bench/bench_logs.py [--mb 200 | --lines N] [--regex] [--out build/bench/logs.json]``
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout, installed or not

from tproxy_nb.analysis.logs import parse_envoy_log  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "logs" / "envoy-1.40-default.log"

_CONN = re.compile(r'(?<="ConnectionId":")\d+|(?<=\[C)\d+(?=\])')
_STREAM = re.compile(r'(?<="StreamId":")\d+')
_HEAD = re.compile(r"^\[2026-11-26 06:09:(\d\d)\.(\d{3})\]\[(\d+)\]", re.M)


def _template(sample: str) -> tuple[str, int, list[str], list[int], list[str]]:
    """The sample's worker traffic as a ``str.format`` template.

    Returns the template, how many connection ids and stream ids it uses, the
    distinct millisecond offsets of its timestamps, and its thread ids.
    """
    lines = sample.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if "new connection from" in line)
    last = next(i for i, line in enumerate(lines) if "caught ENVOY_SIGTERM" in line)
    block = "".join(lines[first:last]).replace("{", "{{").replace("}", "}}")
    conns = sorted({int(c) for c in _CONN.findall(block)})
    streams = sorted(set(_STREAM.findall(block)))
    threads = sorted(set(m[3] for m in _HEAD.finditer(block)))
    start = min(int(m[1]) * 1000 + int(m[2]) for m in _HEAD.finditer(block))
    block = _CONN.sub(lambda m: f"{{c{conns.index(int(m[0]))}}}", block)
    block = _STREAM.sub(lambda m: f"{{s{streams.index(m[0])}}}", block)
    offsets: list[int] = []

    def head(m: re.Match) -> str:
        offset = int(m[1]) * 1000 + int(m[2]) - start
        if offset not in offsets:
            offsets.append(offset)
        return f"[{{t{offsets.index(offset)}}}][{{w{threads.index(m[3])}}}]"

    return _HEAD.sub(head, block), len(conns), [str(s) for s in streams], offsets, threads


def write_log(path: Path, lines: int, seed: int = 1, max_bytes: int = 0) -> int:
    """Write at least ``lines`` lines (or ``max_bytes`` bytes) of Envoy debug log to ``path``; return the line count."""
    template, n_conns, streams, offsets, threads = _template(SAMPLE.read_text())
    rng = random.Random(seed)
    block_lines = template.count("\n")
    base_ms = 1_795_000_000_000  # 2026-11-18, in milliseconds since the epoch
    span_ms = max(offsets) + 1  # blocks follow each other in time
    written = 0
    with open(path, "w") as f:
        for k in range(-(-lines // block_lines) if not max_bytes else 1 << 40):
            if max_bytes and f.tell() >= max_bytes:
                break
            at = base_ms + k * span_ms
            values = {f"c{i}": str(k * n_conns + i) for i in range(n_conns)}
            values.update({f"s{i}": str(rng.getrandbits(64)) for i in range(len(streams))})
            values.update({f"w{i}": str(20 + (k + i) % 8) for i in range(len(threads))})
            for i, offset in enumerate(offsets):
                ms = at + offset
                values[f"t{i}"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"
            f.write(template.format(**values))
            written += block_lines
    return written


def bare_read(path: Path) -> None:
    with open(path) as f:
        for _ in f:
            pass


def best_of(repeat: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - started)
    return best


def _max_rss_bytes() -> int:
    """This process's peak resident memory so far."""
    try:  # Linux: VmHWM starts afresh at exec; ru_maxrss would keep the parent's peak
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)[1]) * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes


def peak_memory(path: Path) -> int:
    """Bytes one ``parse_envoy_log(path)`` adds to the peak resident memory, measured in a fresh process."""
    code = "import sys; from bench.bench_logs import _parse_peak; print(_parse_peak(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True, check=True)
    return int(out.stdout)


def _parse_peak(path: str) -> int:
    parse_envoy_log(SAMPLE)  # what pandas and Arrow load on first use is no cost of this log
    before = _max_rss_bytes()
    df = parse_envoy_log(Path(path))
    peak = _max_rss_bytes() - before
    del df
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200, help="size of the generated log in MB (default 200)")
    parser.add_argument("--lines", type=int, default=0, help="lines in the generated log instead of --mb")
    parser.add_argument("--regex", action="store_true", help="also time the regex-only path (fast=False)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts (default 3)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "build" / "bench" / "logs.json", help="where the JSON result goes"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        path = Path(tmp) / "envoy.log"
        lines = write_log(path, args.lines, max_bytes=0 if args.lines else int(args.mb * 1e6))
        file_bytes = path.stat().st_size
        bare_read(path)  # warm the page cache for both contenders
        bare_s = best_of(args.repeat, bare_read, path)
        parse_s = best_of(args.repeat, parse_envoy_log, path)
        records = int(parse_envoy_log(path)["level"].notna().sum())
        regex_s = best_of(1, lambda p: parse_envoy_log(p, fast=False), path) if args.regex else None
        peak = peak_memory(path)

    result = {
        "lines": lines,
        "records": records,
        "file_bytes": file_bytes,
        "bare_read_s": round(bare_s, 4),
        "parse_s": round(parse_s, 4),
        "ratio": round(parse_s / bare_s, 2),
        "lines_per_s": round(lines / parse_s),
        "peak_mem_bytes": peak,
        "mem_ratio": round(peak / file_bytes, 2),
        "goals": {
            "lines_per_s >= 1e6": lines / parse_s >= 1e6,
            "ratio <= 3": parse_s / bare_s <= 3,
            "peak <= 2x file": peak <= 2 * file_bytes,
        },
    }
    if regex_s is not None:
        result["regex_parse_s"] = round(regex_s, 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
