"""Parsed Envoy logs to one Parquet file (``tproxy-nb logs PATH... --to parquet OUT``), for pandas or DuckDB.

Each file is read by :func:`tproxy_nb.analysis.logs.parse_envoy_log`; the rows get a ``file``
column and are written with pyarrow. Connection and stream ids stay unsigned 64-bit (stream ids
exceed 2^63), timestamps stay timestamps.

Example::

    logs_to_parquet(["igw.log", "sidecar.log"], "logs.parquet")      # -> rows written
    pd.read_parquet("logs.parquet").query("logger == 'rbac'")
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..analysis.logs import parse_envoy_log
from ..errors import TproxyError


class ExportError(TproxyError):
    """Logs that cannot be read, or a Parquet file that cannot be written."""


def logs_to_parquet(paths: list[str | Path], out: str | Path) -> int:
    """Parse every log in ``paths`` and write them to the Parquet file ``out``; return the rows written.

    paths: Envoy debug logs (text, any format :func:`parse_envoy_log` reads). out: the file to write.
    Nothing is written when a path is missing or not a file.

    Example: ``logs_to_parquet(["build/report/data/logs/igw.debug.log"], "igw.parquet")`` -> ``1234``.
    """
    files = [Path(p).expanduser() for p in paths]
    bad = [str(p) for p in files if not p.is_file()]
    if not files or bad:
        raise ExportError(
            f"Cannot read {', '.join(bad) if bad else 'any log: no path was given'}: a log must be an existing "
            "file (for example build/report/data/logs/igw.debug.log). Nothing was written."
        )
    target = Path(out).expanduser()
    if target.is_dir():
        raise ExportError(f"{target} is a directory; name the Parquet file to write, e.g. {target / 'logs.parquet'}.")
    frames = []
    for path in files:
        df = parse_envoy_log(path)
        df.insert(0, "file", str(path))
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    try:
        table.to_parquet(target, engine="pyarrow", index=False)
    except OSError as e:
        raise ExportError(f"Cannot write {target}: {e.strerror or e}. Nothing usable was written.") from None
    return len(table)
